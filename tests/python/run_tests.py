"""Runs tests/python/test_*.py on one copy of the flowrt package, in a clean environment.

  run_tests.py build --package-root BUILD/python --tool BUILD/bin/flowrt --library LIB --scratch DIR
  run_tests.py install --cmake CMAKE --build-dir BUILD --python-dir lib/python3/dist-packages
               --libdir lib --bindir bin --scratch DIR

`build` tests the build tree's package as it is; `install` first runs `cmake --install BUILD
--prefix DIR/prefix` and tests the installed package with the installed `flowrt` command. Either
way the tests run in a subprocess whose working directory is the scratch directory and whose
environment has PYTHONPATH = the package root only, no FLOWRT_LIBRARY, FLOWRT_BACKEND_PATH or
LD_LIBRARY_PATH: the package must find libflowrt by itself. The tests check that it found the
expected library (FLOWRT_TEST_LIBRARY) from the expected package (FLOWRT_TEST_PACKAGE).
Exit status 77: skipped (an absolute install directory cannot be redirected into a scratch prefix).
"""
import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SONAME = "libflowrt.so.0"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["build", "install"])
    ap.add_argument("--package-root")
    ap.add_argument("--tool")
    ap.add_argument("--library")
    ap.add_argument("--cmake")
    ap.add_argument("--build-dir")
    ap.add_argument("--python-dir")
    ap.add_argument("--libdir")
    ap.add_argument("--bindir")
    ap.add_argument("--scratch", required=True)
    a = ap.parse_args()

    shutil.rmtree(a.scratch, ignore_errors=True)
    os.makedirs(a.scratch)
    if a.mode == "build":
        root, tool, library = a.package_root, a.tool, a.library
    else:
        for d in (a.python_dir, a.libdir, a.bindir):
            if os.path.isabs(d):
                print(f"skipped: install directory {d} is absolute, so --prefix cannot move it")
                return 77
        prefix = os.path.join(a.scratch, "prefix")
        r = subprocess.run([a.cmake, "--install", a.build_dir, "--prefix", prefix],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            print(r.stdout)
            print(f"FAIL: cmake --install {a.build_dir} --prefix {prefix} exited {r.returncode} "
                  "(every target must be built first)")
            return 1
        root = os.path.join(prefix, a.python_dir)
        tool = os.path.join(prefix, a.bindir, "flowrt")
        library = os.path.join(prefix, a.libdir, SONAME)

    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "FLOWRT_LIBRARY", "FLOWRT_BACKEND_PATH", "LD_LIBRARY_PATH",
                        "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONPATH=root, FLOWRT_TOOL=tool, FLOWRT_TEST_LIBRARY=library,
               FLOWRT_TEST_PACKAGE=os.path.join(root, "flowrt"), FLOWRT_TEST_TMP=a.scratch,
               PYTHONDONTWRITEBYTECODE="1")
    print(f"testing the package in {root} (library {library}, tool {tool})", flush=True)
    return subprocess.call([sys.executable, "-m", "unittest", "discover", "-s", HERE, "-v"],
                           env=env, cwd=a.scratch)


if __name__ == "__main__":
    sys.exit(main())
