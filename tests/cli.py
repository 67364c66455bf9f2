"""Running the programs under experiments/ from the tests, as a user runs them.

`run_module` starts `python -m program` in a fresh interpreter. A `CLIHost`
runs a program's `main` through absl's `app.run` once per argument list in
one interpreter of its own: a fresh interpreter costs about 8 s of imports on
this machine, and calls share what the host compiled.
"""

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(*args, timeout=600):
    """`python -m args...` in a fresh interpreter: the entry point as a user runs it."""
    return subprocess.run(
        [sys.executable, '-m', *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# A CLI host: one interpreter that runs a program's `main` through `app.run`
# for each argument list it reads (a JSON line on stdin), flags reset in
# between, and answers with [exit code, stdout, stderr] (code 'raised' and the
# traceback for anything but an exit). A fresh interpreter costs about 8 s of
# imports here, and calls share what the host compiled.
_HOST = """
import contextlib, importlib, io, json, sys, traceback
from absl import app, flags
module, channel = importlib.import_module(sys.argv[1]), sys.stdout
for line in sys.stdin:
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            app.run(module.main, argv=[sys.argv[1], *json.loads(line)])
    except SystemExit as e:
        code = e.code or 0
    except BaseException:
        err.write(traceback.format_exc())
        code = 'raised'
    finally:
        flags.FLAGS.unparse_flags()
    channel.write(json.dumps([code, out.getvalue(), err.getvalue()]) + chr(10))
    channel.flush()
"""


class CLIHost:
    """A program's `main`, run in one interpreter for many argument lists."""

    def __init__(self, module, env=None):
        self.log = tempfile.TemporaryFile('w+')  # absl logging writes to the real stderr
        self.process = subprocess.Popen(
            [sys.executable, '-c', _HOST, module],
            cwd=ROOT,
            env=dict(os.environ, **(env or {})),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def run(self, *argv):
        self.process.stdin.write(json.dumps(argv) + '\n')
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            raise AssertionError(f'the CLI host died: {self.log.read()[-3000:]}')
        code, out, err = json.loads(line)
        return subprocess.CompletedProcess(argv, code, out, err)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.log.close()


_HOSTS = {}


def host(module: str, **env: str) -> CLIHost:
    """The test module's host of `module` (started on first use; `env` is
    added to its environment then). conftest closes the hosts after each test
    module."""
    if module not in _HOSTS:
        _HOSTS[module] = CLIHost(module, env)
    return _HOSTS[module]


def close_hosts() -> None:
    for h in _HOSTS.values():
        h.close()
    _HOSTS.clear()
