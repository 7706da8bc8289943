"""An outside MCP client trading through coffer: the official `mcp` Python
SDK over streamable HTTP, one session per agent (the seller's key, the
buyer's key). Driven by tests/mcp_interop.rs.

    mcp_trade.py COFFER_URL SELLER_KEY BUYER_KEY SELLER_ID

Steps, each printed as one JSON line {"step": ..., "is_error", "texts"}:
the seller makes a hold invoice; the buyer pays it (held, not paid yet);
the seller settles it; the buyer reads the payment (succeeded, with the
preimage); the buyer opens a session with the seller; the seller charges it
twice (the second charge retried under the same name: charged once); the
buyer closes it (the rest returns). Protocol checks are asserted here; the
Rust side asserts the money.
"""

import asyncio
import contextlib
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

TRADE_TOOLS = {
    "create_hold_invoice", "settle_invoice", "cancel_invoice", "pay_into_escrow", "release_escrow",
    "dispute_escrow", "refund_payment", "get_payment", "list_escrows", "open_session", "charge_session",
    "get_session", "close_session",
}


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


async def call(session, step, tool, args):
    result = await session.call_tool(tool, args)
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    emit(step, is_error=bool(result.is_error), texts=texts)
    assert not result.is_error, (step, texts)
    # The second block is the JSON of the answer.
    return json.loads(texts[1])


@contextlib.asynccontextmanager
async def connect(url, key):
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http, streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, *_):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def main():
    url, seller_key, buyer_key, seller_id = sys.argv[1:5]
    async with connect(url, seller_key) as seller, connect(url, buyer_key) as buyer:
        listed = await seller.list_tools()
        tools = {t.name: t for t in listed.tools}
        missing = TRADE_TOOLS - set(tools)
        assert not missing, f"missing tools: {missing}"
        for name in TRADE_TOOLS:
            assert len(tools[name].description) > 40, name
        emit("list_tools", names=sorted(tools))

        invoice = await call(seller, "create_hold_invoice", "create_hold_invoice",
                             {"amount_msat": 21000, "memo": "an answer, served after payment", "hold_secs": 600})
        assert invoice["hold"] is True, invoice
        paid = await call(buyer, "pay_hold", "pay_invoice", {"bolt11": invoice["bolt11"], "purpose": "an answer"})
        assert paid["status"] == "held" and "preimage" not in paid, paid
        settled = await call(seller, "settle_invoice", "settle_invoice", {"payment_hash": invoice["payment_hash"]})
        assert settled["status"] == "succeeded", settled
        seen = await call(buyer, "get_payment", "get_payment", {"payment_id": paid["id"]})
        assert seen["status"] == "succeeded" and seen["preimage"], seen

        opened = await call(buyer, "open_session", "open_session",
                            {"payee": seller_id, "max_msat": 10000, "expires_in_secs": 600, "purpose": "compute"})
        sid = opened["id"]
        await call(seller, "charge_1", "charge_session",
                   {"session_id": sid, "amount_msat": 3000, "charge_key": "minute-1", "memo": "minute 1"})
        await call(seller, "charge_2", "charge_session",
                   {"session_id": sid, "amount_msat": 2000, "charge_key": "minute-2", "memo": "minute 2"})
        again = await call(seller, "charge_2_retry", "charge_session",
                           {"session_id": sid, "amount_msat": 2000, "charge_key": "minute-2", "memo": "minute 2"})
        assert again["charged_msat"] == 5000, again
        closed = await call(buyer, "close_session", "close_session", {"session_id": sid})
        assert closed["status"] == "closed" and closed["returned_msat"] == 5000, closed
    emit("done")


if __name__ == "__main__":
    asyncio.run(main())
