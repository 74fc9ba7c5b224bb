"""The allocator settings: one definition for the workers' environment and bench perf's own process."""
import subprocess
import sys

from peft3d.core import allocator


def test_worker_environment_and_in_process_settings_agree():
    assert allocator.MALLOC_ENV == {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}
    from peft3d.schedule import runner

    assert runner.MALLOC_ENV is allocator.MALLOC_ENV


def test_set_in_process_calls_mallopt_on_glibc():
    out = subprocess.run([sys.executable, "-c", "from peft3d.core.allocator import set_in_process; "
                          "print(set_in_process())"], capture_output=True, text=True, check=True)
    import platform

    expected = "True" if platform.libc_ver()[0] == "glibc" else "False"
    assert out.stdout.strip() == expected
