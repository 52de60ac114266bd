"""OpenPGP encryption to the advertiser's public key, streaming, with GnuPG.

GnuPG (Debian's `gnupg`) rather than a Python library: it is the reference implementation
every receiver decrypts with, it streams (stdin to stdout, constant memory), and the
pure-Python alternatives are either unmaintained (PGPy) or not packaged for this Python.
Each encryption runs in a throwaway GNUPGHOME holding only the recipient's public key, so
nothing about one account's key ever meets another's. An OpenPGP file carries a random
session key: encrypting the same rows twice gives different bytes (a resend says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

GPG = shutil.which("gpg") or "/usr/bin/gpg"
READ_BYTES = 64 * 1024
_FINGERPRINT = re.compile(r"^fpr:+([0-9A-F]{40,64}):", re.MULTILINE)
_KEY_LINE = re.compile(
    r"^pub:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:([a-zA-Z]*):", re.MULTILINE
)


class OpenPgpError(ValueError):
    """The key is unusable, or GnuPG failed; the message says which."""


def _home(spool: str | None) -> str:
    home = tempfile.mkdtemp(prefix="handoff-gpg-", dir=spool)
    os.chmod(home, 0o700)
    return home


def _gpg(home: str, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [GPG, "--homedir", home, "--batch", "--no-tty", "--quiet", *args],
        input=data, capture_output=True, timeout=30, check=False,
    )  # fmt: skip


def _import(home: str, public_key: str) -> str:
    """Import `public_key` into `home`; the fingerprint of its one encryption key, or
    OpenPgpError saying what is wrong with it."""
    if shutil.which(GPG) is None and not Path(GPG).exists():
        raise OpenPgpError("GnuPG (gpg) is not installed on this server")
    if _gpg(home, "--import", data=public_key.encode()).returncode != 0:
        raise OpenPgpError("not an OpenPGP public key (an ASCII-armored key block)")
    keys = _gpg(home, "--with-colons", "--fingerprint", "--list-keys").stdout.decode(
        errors="replace"
    )
    prints = _FINGERPRINT.findall(keys)
    if not prints:
        raise OpenPgpError("the key block holds no public key")
    if keys.count("\npub:") + keys.startswith("pub:") > 1:
        raise OpenPgpError("give exactly one public key")
    caps = _KEY_LINE.search(keys)
    if caps is None or "E" not in caps.group(1):
        raise OpenPgpError("the key cannot encrypt (revoked, expired, or signing only)")
    return str(prints[0])


def key_fingerprint(public_key: str, spool: str | None = None) -> str:
    """The fingerprint of the one encryption-capable public key in `public_key` (armored),
    or OpenPgpError saying what is wrong with it."""
    home = _home(spool)
    try:
        return _import(home, public_key)
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def encrypted(
    chunks: AsyncIterator[bytes], public_key: str, spool: str | None = None
) -> AsyncIterator[bytes]:
    """`chunks` encrypted to `public_key`, as they come (binary OpenPGP)."""
    home = _home(spool)
    try:
        fingerprint = await asyncio.to_thread(_import, home, public_key)
        proc = await asyncio.create_subprocess_exec(
            GPG, "--homedir", home, "--batch", "--no-tty", "--quiet", "--trust-model", "always",
            "--compress-algo", "none", "--encrypt", "--recipient", fingerprint, "--output", "-",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr

        async def feed() -> None:
            try:
                async for chunk in chunks:
                    stdin.write(chunk)
                    await stdin.drain()
            finally:
                stdin.close()

        feeding = asyncio.create_task(feed())
        try:
            while block := await stdout.read(READ_BYTES):
                yield block
            await feeding
            code = await proc.wait()
            if code != 0:
                problem = (await stderr.read()).decode(errors="replace").strip()
                raise OpenPgpError(f"gpg failed ({code}): {problem[:300]}")
        finally:
            if not feeding.done():
                feeding.cancel()
                with contextlib.suppress(
                    asyncio.CancelledError, BrokenPipeError, ConnectionResetError
                ):
                    await feeding
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        shutil.rmtree(home, ignore_errors=True)
