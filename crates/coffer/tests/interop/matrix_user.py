#!/usr/bin/env python3
"""One Matrix user of the bridge tests, over matrix-nio (a real client
library), against the Synapse that .ci/run starts.

    python matrix_user.py COMMAND < ARGS.json > ANSWER.json

ARGS is one JSON object; every command but `register` needs `homeserver`,
`user_id` and `access_token` in it (what `register` and `login` answer).
The answer is one JSON object on stdout; on failure, `{"error": "..."}`
and exit status 1.

Commands and their arguments:

- `register {homeserver, shared_secret, username, password, displayname?,
  admin?}` -> `{user_id, access_token, device_id}`: Synapse's shared-secret
  registration (`/_synapse/admin/v1/register`: an HMAC-SHA1 of the nonce,
  the user, the password and admin-ness, keyed with the secret).
- `login {homeserver, user, password}` -> `{user_id, access_token,
  device_id}` (a new device).
- `create_room {invite: [user_id], name?}` -> `{room_id}`: a private,
  unencrypted room, the users invited.
- `join {room}` -> `{room_id}`: a room id or alias.
- `send {room, text, reply_to?, notice?}` -> `{event_id}`: an m.text (or
  m.notice); with `reply_to`, a rich reply: `m.relates_to.m.in_reply_to`,
  and the fallback of the event answered (the `> <@sender> line` quote
  and a blank line before the body, `<mx-reply>` in the HTML), as the
  spec described it and many clients still send it.
- `react {room, event_id, key}` -> `{event_id}`: an m.reaction, an
  m.annotation of the event with `key`.
- `messages {room, limit?}` -> `{events: [...]}`: the room's timeline as
  this user reads it, oldest first (at most `limit`, 500 by default, of the
  latest events): m.room.message and m.reaction events, with the edits
  (m.replace by the same sender) applied, the edit events themselves not
  listed. Each is `{event_id, sender, type, msgtype, body,
  formatted_body, url, info, reply_to, relates_to, key, edited}` (absent
  values null; `url` the mxc URL of an m.image, `key` a reaction's key,
  `relates_to` the event a reaction annotates).
"""

import asyncio
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request

from nio import AsyncClient, AsyncClientConfig, MessageDirection, RoomPreset
from nio.responses import ErrorResponse

TIMEOUT_SECS = 30


class Failed(Exception):
    pass


def check(response, what):
    if isinstance(response, ErrorResponse):
        raise Failed(f"{what}: {response.status_code} {response.message}")
    return response


def http_json(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECS) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as e:
        raise Failed(f"{url}: {e.code} {e.read().decode(errors='replace')}") from None


def register(args):
    base = args["homeserver"].rstrip("/") + "/_synapse/admin/v1/register"
    nonce = http_json(base)["nonce"]
    username, password, admin = args["username"], args["password"], bool(args.get("admin", False))
    # The parts joined by NULs (none after the last).
    mac = hmac.new(
        args["shared_secret"].encode(),
        b"\x00".join(p.encode() for p in (nonce, username, password, "admin" if admin else "notadmin")),
        hashlib.sha1,
    )
    body = {"nonce": nonce, "username": username, "password": password, "admin": admin, "mac": mac.hexdigest()}
    if args.get("displayname"):
        body["displayname"] = args["displayname"]
    answer = http_json(base, body)
    return {k: answer.get(k) for k in ("user_id", "access_token", "device_id")}


def client(args):
    config = AsyncClientConfig(encryption_enabled=False, request_timeout=TIMEOUT_SECS)
    c = AsyncClient(args["homeserver"], args.get("user_id", ""), config=config)
    if "access_token" in args:
        c.user_id = args["user_id"]
        c.access_token = args["access_token"]
        c.device_id = args.get("device_id") or ""
    return c


async def login(c, args):
    c.user = args["user"]
    answer = check(await c.login(password=args["password"], device_name="coffer test"), "login")
    return {"user_id": answer.user_id, "access_token": answer.access_token, "device_id": answer.device_id}


async def create_room(c, args):
    answer = check(
        await c.room_create(name=args.get("name"), invite=args.get("invite", []), preset=RoomPreset.private_chat),
        "create_room",
    )
    return {"room_id": answer.room_id}


async def join(c, args):
    return {"room_id": check(await c.join(args["room"]), "join").room_id}


async def send(c, args):
    room, text = args["room"], args["text"]
    content = {"msgtype": "m.notice" if args.get("notice") else "m.text", "body": text}
    if args.get("reply_to"):
        original = check(await c.room_get_event(room, args["reply_to"]), "the event replied to").event.source
        quoted = original.get("content", {}).get("body", "")
        sender = original.get("sender", "")
        lines = quoted.splitlines() or [""]
        fallback = "\n".join([f"> <{sender}> {lines[0]}"] + [f"> {line}" for line in lines[1:]])
        content["body"] = f"{fallback}\n\n{text}"
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = (
            f'<mx-reply><blockquote><a href="https://matrix.to/#/{room}/{args["reply_to"]}">In reply to</a> '
            f'<a href="https://matrix.to/#/{sender}">{html_escape(sender)}</a><br>'
            f"{html_escape(quoted)}</blockquote></mx-reply>{html_escape(text)}"
        )
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": args["reply_to"]}}
    answer = check(await c.room_send(room, "m.room.message", content), "send")
    return {"event_id": answer.event_id}


def html_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")


async def react(c, args):
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": args["event_id"], "key": args["key"]}}
    answer = check(await c.room_send(args["room"], "m.reaction", content), "react")
    return {"event_id": answer.event_id}


async def messages(c, args):
    room, limit = args["room"], int(args.get("limit", 500))
    raw, start = [], None
    while len(raw) < limit:
        page = check(
            await c.room_messages(room, start=start, direction=MessageDirection.back, limit=min(100, limit - len(raw))),
            "messages",
        )
        raw.extend(event.source for event in page.chunk)
        if not page.chunk or not page.end or page.end == start:
            break
        start = page.end
    raw.reverse()

    events, by_id, edits = [], {}, []
    for source in raw:
        kind = source.get("type")
        content = source.get("content") or {}
        relates = content.get("m.relates_to") or {}
        if kind == "m.room.message" and relates.get("rel_type") == "m.replace":
            edits.append(source)
            continue
        if kind not in ("m.room.message", "m.reaction"):
            continue
        seen = {
            "event_id": source.get("event_id"),
            "sender": source.get("sender"),
            "type": kind,
            "msgtype": content.get("msgtype"),
            "body": content.get("body"),
            "formatted_body": content.get("formatted_body"),
            "url": content.get("url"),
            "info": content.get("info"),
            "reply_to": (relates.get("m.in_reply_to") or {}).get("event_id"),
            "relates_to": relates.get("event_id") if kind == "m.reaction" else None,
            "key": relates.get("key") if kind == "m.reaction" else None,
            "edited": False,
        }
        events.append(seen)
        by_id[seen["event_id"]] = seen
    # Edits in timeline order, the latest last; only the sender's own count.
    for source in edits:
        content = source.get("content") or {}
        target = by_id.get(content["m.relates_to"].get("event_id"))
        new = content.get("m.new_content")
        if target is None or not isinstance(new, dict) or target["sender"] != source.get("sender"):
            continue
        target.update(
            msgtype=new.get("msgtype"),
            body=new.get("body"),
            formatted_body=new.get("formatted_body"),
            edited=True,
        )
    return {"events": events}


COMMANDS = {"login": login, "create_room": create_room, "join": join, "send": send, "react": react, "messages": messages}


async def run(command, args):
    if command == "register":
        return register(args)
    if command not in COMMANDS:
        raise Failed(f"no command {command} (the commands: register, {', '.join(COMMANDS)})")
    c = client(args)
    try:
        return await asyncio.wait_for(COMMANDS[command](c, args), TIMEOUT_SECS)
    finally:
        await c.close()


def main():
    if len(sys.argv) != 2:
        print(json.dumps({"error": "usage: matrix_user.py COMMAND < ARGS.json"}))
        sys.exit(2)
    try:
        answer = asyncio.run(run(sys.argv[1], json.load(sys.stdin)))
    except (Failed, KeyError, ValueError, TimeoutError) as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
