from peft3d.bench.cli import main

main()
