from peft3d.cli.app import main

main()
