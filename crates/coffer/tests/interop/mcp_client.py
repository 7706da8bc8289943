"""An outside MCP client for coffer: the official `mcp` Python SDK, over stdio
or streamable HTTP. Driven by tests/mcp_interop.rs.

    mcp_client.py stdio|http COFFER_BIN COFFER_URL AGENT_KEY BOLT11_OK BOLT11_DENIED

Over stdio it starts `COFFER_BIN mcp` with COFFER_URL and COFFER_AGENT_KEY;
over http it connects to COFFER_URL/mcp with the key as a bearer token
(COFFER_BIN is not used). Then it initializes,
lists the tools, calls get_balance, decode_invoice and pay_invoice on
BOLT11_OK (twice: a retry must not pay again), then waits for one line on
stdin (the Rust side sets a denying policy meanwhile) and pays BOLT11_DENIED.
Each step prints one JSON line to stdout: {"step": ..., ...}. Checks that
belong to the protocol are asserted here; the Rust side asserts the rest.
"""

import asyncio
import contextlib
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

EXPECTED_TOOLS = {
    "get_balance",
    "get_budget",
    "create_invoice",
    "pay_invoice",
    "decode_invoice",
    "list_payments",
    "list_rooms",
    "read_room",
    "post_message",
    "request_payment",
    "pay_request",
}


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def texts(result):
    return [c.text for c in result.content if getattr(c, "type", None) == "text"]


def tool_result(step, result):
    parts = texts(result)
    emit(step, is_error=bool(result.is_error), texts=parts)
    return parts


async def wait_for_go():
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit(f"expected 'go' on stdin, got {line!r}")


@contextlib.asynccontextmanager
async def connect(transport, coffer_bin, url, key):
    """The (read, write) streams of an MCP connection to coffer."""
    if transport == "stdio":
        params = StdioServerParameters(
            command=coffer_bin,
            args=["mcp"],
            env={"COFFER_URL": url, "COFFER_AGENT_KEY": key, "COFFER_LOG": "warn"},
        )
        async with stdio_client(params) as (read, write):
            yield read, write
    elif transport == "http":
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        async with http, streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, *_):
            yield read, write
    else:
        raise SystemExit(f"unknown transport {transport!r}")


async def main():
    transport, coffer_bin, url, key, bolt11_ok, bolt11_denied = sys.argv[1:7]
    async with connect(transport, coffer_bin, url, key) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            info = init.server_info
            emit("initialize", name=info.name, version=info.version, protocol=str(init.protocol_version))
            assert info.name == "coffer", info

            listed = await session.list_tools()
            names = sorted(t.name for t in listed.tools)
            missing = EXPECTED_TOOLS - set(names)
            assert not missing, f"missing tools: {missing}"
            for t in listed.tools:
                assert t.description and len(t.description) > 20, t
            pay_tool = next(t for t in listed.tools if t.name == "pay_invoice")
            assert set(pay_tool.input_schema.get("required", [])) == {"bolt11", "purpose"}, pay_tool.input_schema
            emit("list_tools", names=names)

            result = await session.call_tool("get_balance", {})
            assert not result.is_error, texts(result)
            tool_result("get_balance", result)

            result = await session.call_tool("decode_invoice", {"bolt11": bolt11_ok})
            assert not result.is_error, texts(result)
            tool_result("decode_invoice", result)

            result = await session.call_tool("pay_invoice", {"bolt11": bolt11_ok, "purpose": "mcp interop test"})
            tool_result("pay_invoice", result)

            # A retried tool call: the same answer, no second payment.
            result = await session.call_tool("pay_invoice", {"bolt11": bolt11_ok, "purpose": "mcp interop test"})
            tool_result("pay_invoice_retry", result)

            emit("waiting")
            await wait_for_go()

            result = await session.call_tool("pay_invoice", {"bolt11": bolt11_denied, "purpose": "too much"})
            tool_result("pay_invoice_denied", result)

            result = await session.call_tool("get_budget", {})
            tool_result("get_budget", result)

            result = await session.call_tool("read_room", {"room_id": "no-such-room"})
            tool_result("read_room_missing", result)
    emit("done")


if __name__ == "__main__":
    asyncio.run(main())
