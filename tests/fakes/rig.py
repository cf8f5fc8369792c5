"""shipper (a real subprocess) between the vendors' SDKs and the three fake upstreams, plus read-only spool views.

`vendor_rig()` starts the fakes, writes a config with one sink per vendor pointing at them, and starts the daemon.
Each sink has its own key (in a file) besides the app's: the fakes accept both, so a test can tell which one was
forwarded. Not responsible for what the tests assert.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shipper.spool.reader import DeadRow, SpoolReader
from tests.fakes.freeplay import FreeplayFake
from tests.fakes.humanloop import HumanloopFake
from tests.fakes.keywordsai import KeywordsAIFake
from tests.fakes.snippets import FP_KEY, HL_KEY, KW_KEY, close_freeplay_session
from tests.support import Daemon, run_cli, write_config

FP_SINK_KEY = "fp-sink-key-456"
HL_SINK_KEY = "hl_sk_sink_456"
KW_SINK_KEY = "kw-sink-key-456"
APP_KEYS = (FP_KEY, HL_KEY, KW_KEY)
SINK_KEYS = (FP_SINK_KEY, HL_SINK_KEY, KW_SINK_KEY)
PASS_THROUGH = "[enrich]\ntokens = false\ncost = false\n"


def sink_toml(
    name: str,
    vendor: str,
    base_url: str,
    key_file: Path | None,
    *,
    override_key: bool = False,
    timeout: float = 5.0,
    concurrency: int = 16,
    key_env: str | None = None,
) -> str:
    lines = [
        f"[sinks.{name}]",
        f'type = "{vendor}"',
        f'base_url = "{base_url}"',
        "retry_initial_backoff = 0.05",
        "retry_max_backoff = 0.5",
        f"timeout = {timeout}",
        f"concurrency = {concurrency}",
        f"override_key = {'true' if override_key else 'false'}",
    ]
    if key_env is not None:
        lines.append(f'api_key_env = "{key_env}"')
    elif key_file is not None:
        lines.append(f'api_key_file = "{key_file}"')
    return "\n".join(lines) + "\n"


@dataclass
class Rig:
    tmp_path: Path
    fp: FreeplayFake
    hl: HumanloopFake
    kw: KeywordsAIFake
    daemon: Daemon

    @property
    def host(self) -> str:
        """host:port of shipper's TCP listener: what the SDKs are pointed at."""
        return self.daemon.http

    @property
    def spool(self) -> Path:
        return self.tmp_path / "spool.db"

    @property
    def fakes(self) -> tuple[FreeplayFake, HumanloopFake, KeywordsAIFake]:
        return self.fp, self.hl, self.kw

    def dead_letters(self) -> list[DeadRow]:
        return dead_letters(self.spool)

    def status(self) -> dict[str, Any]:
        code, out, err = run_cli("status", "--json", "--config", str(self.daemon.config))
        assert code == 0, err
        return dict(orjson.loads(out))

    def sink_status(self, sink: str) -> dict[str, Any]:
        return next(s for s in self.status()["sinks"] if s["sink"] == sink)

    async def restart(self) -> None:
        """Start the daemon again on the same config and spool (after kill9 or terminate)."""
        await self.daemon.start()


def dead_letters(spool: Path) -> list[DeadRow]:
    """The dead letters, read-only, in id order: none before the daemon has laid the spool out."""
    if not spool.exists():
        return []
    with SpoolReader.open(spool) as reader:
        return reader.dead_letters() if reader.version() else []


@contextlib.asynccontextmanager
async def vendor_rig(
    tmp_path: Path,
    *,
    start_fakes: bool = True,
    extra: str = "",
    **sink_options: Any,
) -> AsyncIterator[Rig]:
    """Three fakes (accepting app and sink keys) and a running daemon with sinks fp, hl and kw."""
    fp = FreeplayFake(api_keys=(FP_KEY, FP_SINK_KEY))
    hl = HumanloopFake(api_keys=(HL_KEY, HL_SINK_KEY))
    kw = KeywordsAIFake(api_keys=(KW_KEY, KW_SINK_KEY))
    keys = {}
    for name, key in (("fp", FP_SINK_KEY), ("hl", HL_SINK_KEY), ("kw", KW_SINK_KEY)):
        keys[name] = tmp_path / f"{name}.key"
        keys[name].write_text(key + "\n")
        keys[name].chmod(0o600)
    sinks = "\n".join(
        [
            sink_toml("fp", "freeplay", fp.url, keys["fp"], **sink_options),
            sink_toml("hl", "humanloop", hl.url, keys["hl"], **sink_options),
            sink_toml("kw", "keywordsai", kw.url, keys["kw"], **sink_options),
        ]
    )
    # The SDK tests compare what the fake received with what the SDK sends directly: no enrichment unless asked.
    extra = extra if "[enrich]" in extra else PASS_THROUGH + extra
    daemon = Daemon.from_config(write_config(tmp_path, sinks, extra=extra))
    rig = Rig(tmp_path, fp, hl, kw, daemon)
    try:
        if start_fakes:
            for fake in rig.fakes:
                await fake.start()
        await daemon.start()
        yield rig
    except BaseException:
        sys.stderr.write(f"--- shipper log (tail) ---\n{daemon.logs()[-6000:]}\n")
        raise
    finally:
        if daemon.proc is not None and daemon.proc.returncode is None:
            try:
                await daemon.terminate(timeout=15)
            except TimeoutError:
                await daemon.kill9()
        for fake in rig.fakes:
            await fake.stop()
        close_freeplay_session()
