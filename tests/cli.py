"""Running the programs under experiments/ from the tests, as a user runs them.

`run_module` starts `python -m program` in a fresh interpreter. A `CLIHost`
runs a program's `main` through absl's `app.run` once per argument list in
one interpreter of its own: a fresh interpreter costs about 8 s of imports on
this machine, and calls share what the host compiled.
"""

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import tempfile
import traceback

from absl import app, flags

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


def call_main(module: str, *argv: str) -> subprocess.CompletedProcess:
    """`module`'s `main` through absl's `app.run` in this process, as
    `python -m module argv...` runs it after the imports: the exit code,
    stdout and stderr. Flags are reset afterwards; a failure other than an
    exit propagates with its traceback. absl flags are global: a process can
    hold only one program that defines --task (the test process holds
    experiments.train; the others run in a `CLIHost`)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            app.run(importlib.import_module(module).main, argv=[module, *argv])
    except SystemExit as e:
        code = e.code or 0
    finally:
        flags.FLAGS.unparse_flags()
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def serve(module: str) -> None:
    """A host's loop: `call_main` for each argument list read from stdin (a
    JSON line), answered on stdout with [exit code, stdout, stderr]; code
    'raised' and the traceback for anything but an exit."""
    channel = sys.stdout
    for line in sys.stdin:
        try:
            done = call_main(module, *json.loads(line))
            answer = [done.returncode, done.stdout, done.stderr]
        except BaseException:
            answer = ['raised', '', traceback.format_exc()]
        channel.write(json.dumps(answer) + '\n')
        channel.flush()


class CLIHost:
    """A program's `main`, run in one interpreter of its own for many
    argument lists (`serve`): calls share the imports and what the host
    compiled."""

    def __init__(self, module, env=None):
        self.log = tempfile.TemporaryFile('w+')  # absl logging writes to the real stderr
        self.process = subprocess.Popen(
            [
                sys.executable,
                '-c',
                'import sys; from tests import cli; cli.serve(sys.argv[1])',
                module,
            ],
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


def assert_refused(results, messages):
    """Each result an exit with an error code and its one-line message."""
    for result, message in zip(results, messages, strict=True):
        output = result.stdout + result.stderr
        assert result.returncode != 0, (message, output)
        assert message in output, output
        assert 'Traceback' not in output, output


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
