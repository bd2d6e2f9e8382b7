"""``python -m ordermgr.paper`` serves, logs its URL once, and exits 0 on a signal."""

from __future__ import annotations

import json
import signal
import sys

import aiohttp
import anyio
import pytest
from anyio.streams.text import TextReceiveStream


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_cli_serves_until_signalled(stop_signal: signal.Signals) -> None:
    command = [sys.executable, "-m", "ordermgr.paper", "--port", "0", "--price-walk-interval", "0"]
    with anyio.fail_after(15):
        async with await anyio.open_process(command) as process:
            assert process.stderr is not None
            url = await _logged_url(TextReceiveStream(process.stderr))
            async with aiohttp.ClientSession() as client, client.get(f"{url}/v5/market/time") as response:
                assert (await response.json())["retCode"] == 0
            process.send_signal(stop_signal)
            assert await process.wait() == 0


async def _logged_url(lines: TextReceiveStream) -> str:
    buffered = ""
    async for chunk in lines:
        buffered += chunk
        while "\n" in buffered:
            line, buffered = buffered.split("\n", 1)
            record = json.loads(line)
            if "url" in record:
                return str(record["url"])
    raise AssertionError("the venue exited without logging its URL")
