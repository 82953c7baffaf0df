"""What the fuzz run and its schemathesis hooks share: plain HTTP calls to a running nexus, the
signatures its integrations check, and the provisioning of the credentials the fuzzing uses.

Standard library only (urllib), so that the hooks, loaded inside schemathesis, need nothing more.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

# Every call goes to the nexus this run started, on a loopback address: nothing else is reached.
TIMEOUT_SECONDS = 30


class ApiError(RuntimeError):
    pass


def call(
    base: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    form: list[tuple[str, str]] | dict[str, str] | None = None,
    raw: bytes | None = None,
    content_type: str | None = None,
) -> tuple[int, Any]:
    """One request; the status and the JSON answer (or the text, when it is not JSON)."""
    url = base.rstrip("/") + path
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ApiError(f"refusing to call {url}: the fuzz run only talks to loopback addresses")
    all_headers = dict(headers or {})
    data: bytes | None = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        all_headers.setdefault("content-type", "application/json")
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        all_headers.setdefault("content-type", "application/x-www-form-urlencoded")
    elif raw is not None:
        data = raw
        if content_type:
            all_headers.setdefault("content-type", content_type)
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, body.decode(errors="replace")


def ok(base: str, method: str, path: str, **kwargs: Any) -> Any:
    """A call that must succeed: its `data`."""
    status, answer = call(base, method, path, **kwargs)
    if not 200 <= status < 300:
        raise ApiError(f"{method} {path}: {status} {answer}")
    return answer.get("data") if isinstance(answer, dict) else answer


# --- Signatures, as the integrations' senders make them -------------------------------------


def hub_signature(secret: str, body: bytes) -> str:
    """`X-Hub-Signature` of the Third-Party Messaging API: hex HMAC-SHA1 of the raw body."""
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def twilio_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """`X-Twilio-Signature`: base64 HMAC-SHA1 of the URL then each sorted parameter's name+value."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    """An inbound-parse post's `signature`: hex HMAC-SHA256 of `timestamp` + `token`."""
    return hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, str, bytes]]) -> tuple[str, bytes]:
    """A multipart/form-data body: (content type, bytes)."""
    boundary = "nexus-fuzz-" + uuid.uuid4().hex
    body = b""
    for name, value in fields:
        body += (
            f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    for name, filename, mimetype, content in files:
        body += (
            f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\ncontent-type: {mimetype}\r\n\r\n'
        ).encode()
        body += content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


# --- Provisioning ----------------------------------------------------------------------------


def admin_headers(context: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {context['admin_token']}"}


def admin_ok(context: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    return ok(
        context["base"],
        method,
        "/nexus/v3/provisioning" + path,
        headers=admin_headers(context),
        json_body=body,
    )


def start_chat(context: dict[str, Any], email: str = "ada@example.com", phone: str = "+15550100") -> dict[str, str]:
    """A customer starts a chat on the main tenant's chat channel, as a widget does."""
    main = context["main"]
    data = ok(
        context["base"],
        "POST",
        "/nexus/v3/chat/sessions",
        headers={"x-api-key": main["keys"]["chat"]},
        form=[
            ("data[firstName]", "Ada"),
            ("data[email]", email),
            ("data[phoneNumber]", phone),
            ("data[endpoint]", main["chat_channel_name"]),
            ("data[subject]", "order 42"),
        ],
    )
    return {"id": data["sessionId"], "token": data["clientToken"], "contact": data["contactId"]}


def provision_main(context: dict[str, Any], ccid: str, receiver: str) -> dict[str, Any]:
    """The tenant every document but provisioning runs against, with one of each credential and
    a conversation in each state the documents' operations need (a live chat session, an
    interaction an agent holds, a stored file, a contact with history)."""
    base = context["base"]
    main: dict[str, Any] = {"ccid": ccid}
    context["main"] = main
    admin_ok(context, "POST", "/tenants", {"ccid": ccid, "name": "Fuzz main"})
    t = f"/tenants/{ccid}"
    # Channels. Every outbound address is the run's own loopback receiver.
    chat = admin_ok(context, "POST", f"{t}/channels", {"type": "chat", "name": "fuzz-chat"})
    main["chat_channel_id"], main["chat_channel_name"] = chat["id"], chat["name"]
    messaging = admin_ok(
        context,
        "POST",
        f"{t}/channels",
        {"type": "messaging", "name": "fuzz-bridge", "settings": {"webhookUrl": f"{receiver}/outbound"}},
    )
    main["messaging"] = {"id": messaging["id"], "secret": messaging["secret"]}
    sms_token = "fuzz-sms-auth-token-" + uuid.uuid4().hex
    sms = admin_ok(
        context,
        "POST",
        f"{t}/channels",
        {
            "type": "sms",
            "name": "fuzz-sms",
            "secret": sms_token,
            "settings": {
                "accountSid": "ACfuzz",
                "from": "+15550000",
                "apiBaseUrl": receiver,
                "webhookBaseUrl": base,
            },
        },
    )
    main["sms"] = {"id": sms["id"], "secret": sms_token, "accountSid": "ACfuzz"}
    mail_key = "fuzz-mail-signing-key-" + uuid.uuid4().hex
    email = admin_ok(
        context,
        "POST",
        f"{t}/channels",
        {
            "type": "email",
            "name": "fuzz-mail",
            "secret": mail_key,
            "credentials": {"apiKey": "fuzz-transmissions-key"},
            "settings": {"from": "support@fuzz.example", "apiBaseUrl": receiver},
        },
    )
    main["email"] = {"id": email["id"], "secret": mail_key}
    securemail = admin_ok(context, "POST", f"{t}/channels", {"type": "securemail", "name": "fuzz-portal"})
    main["securemail_channel_id"] = securemail["id"]
    # API keys.
    main["keys"] = {}
    for permission in ("chat", "history", "securemail", "outbound"):
        key = admin_ok(context, "POST", f"{t}/api-keys", {"name": f"fuzz-{permission}", "permission": permission})
        main["keys"][permission] = key["key"]
    # A suppression, for the outbound API's operations on one.
    main["suppression_id"] = ok(
        base,
        "POST",
        "/nexus/v3/outbound/suppressions",
        headers={"x-api-key": main["keys"]["outbound"]},
        json_body={"address": "+15550100100", "reason": "fuzz"},
    )["id"]
    # A template, for the outbound API's operations on one.
    ok(
        base,
        "PUT",
        "/nexus/v3/outbound/templates/welcome",
        headers={"x-api-key": main["keys"]["outbound"]},
        json_body={"channel": "sms", "body": "Hi {{first_name|there}}, welcome to {{store}}."},
    )
    main["template"] = "welcome"
    # A contact list, for the outbound API's operations on one.
    main["list_id"] = ok(
        base,
        "POST",
        "/nexus/v3/outbound/lists",
        headers={"x-api-key": main["keys"]["outbound"]},
        json_body={"name": "fuzz", "defaultCallingCode": "1"},
    )["id"]
    # A draft campaign of that list, for the operations on one.
    main["campaign_id"] = ok(
        base,
        "POST",
        "/nexus/v3/outbound/campaigns",
        headers={"x-api-key": main["keys"]["outbound"]},
        json_body={"name": "fuzz", "channelId": main["sms"]["id"], "listId": main["list_id"], "template": "welcome"},
    )["id"]
    # Routing: every channel's conversations go to one queue that an agent serves.
    admin_ok(context, "PUT", f"{t}/queues/support", {"skills": ["fuzz"], "timeoutSeconds": 3600})
    for channel in (chat["id"], messaging["id"], sms["id"], email["id"], securemail["id"]):
        admin_ok(context, "PUT", f"{t}/channels/{channel}/routing", {"queue": "support"})
    agent = admin_ok(
        context,
        "POST",
        f"{t}/agents",
        {"username": "fuzz-ann", "nickname": "Ann", "skills": ["fuzz"], "capacity": {"chat": 100}},
    )
    main["agent"] = {"id": agent["id"], "token": agent["token"]}
    # A second agent, ready, whom routing never offers a chat (the queue wants a skill she lacks):
    # the one transfers, invitations and consultations name.
    other = admin_ok(
        context,
        "POST",
        f"{t}/agents",
        {"username": "fuzz-bob", "nickname": "Bob", "skills": [], "capacity": {"chat": 100}},
    )
    main["other_agent"] = {"id": other["id"], "token": other["token"]}
    work = {"authorization": f"Bearer {agent['token']}"}
    ok(base, "POST", "/nexus/v3/workspace/media/chat/ready", headers=work)
    # A chat the agent takes: the workspace's interaction.
    session = start_chat(context)
    ok(
        base,
        "POST",
        f"/nexus/v3/chat/sessions/{session['id']}/messages",
        headers={"x-api-key": main["keys"]["chat"], "x-nexus-client-key": session["token"]},
        form=[("data[type]", "Text"), ("data[text]", "Hello, where is my order?")],
    )
    interaction = None
    for _ in range(100):
        offered = ok(base, "GET", "/nexus/v3/workspace/media/chat/interactions", headers=work)
        if offered["interactions"]:
            interaction = offered["interactions"][0]["id"]
            break
        time.sleep(0.1)
    if interaction is None:
        raise ApiError("the agent was never offered the chat")
    ok(base, "POST", f"/nexus/v3/workspace/media/chat/interactions/{interaction}/accept", headers=work)
    ok(
        base,
        "POST",
        f"/nexus/v3/workspace/media/chat/interactions/{interaction}/send-message",
        headers=work,
        json_body={"message": "Hello Ada, let me look."},
    )
    main["interaction_id"] = interaction
    ok(base, "POST", "/nexus/v3/workspace/media/chat/ready", headers={"authorization": f"Bearer {other['token']}"})
    main["history"] = {"contact_id": session["contact"], "interaction_id": interaction}
    # A second session, live for the Chat API's operations.
    main["session"] = start_chat(context)
    # Another customer: a contact that history's merge can take in.
    main["history"]["other_contact_id"] = start_chat(context, "bob@example.com", "+15550199")["contact"]
    # A file a messaging client uploaded, for the workspace's download.
    content_type, body = multipart(
        [("timestamp", str(int(time.time())))], [("file", "note.txt", "text/plain", b"fuzz file\n")]
    )
    media = ok(
        base,
        "POST",
        f"/nexus/v3/channels/{messaging['id']}/media",
        headers={"x-ccid": ccid, "x-hub-signature": hub_signature(messaging["secret"], body)},
        raw=body,
        content_type=content_type,
    )
    main["media_id"] = media["mediaId"]
    # A securemail conversation.
    ok(
        base,
        "POST",
        "/nexus/v3/securemail",
        headers={"x-api-key": main["keys"]["securemail"]},
        json_body={"address": "ada@example.com", "securebox": "billing", "subject": "Invoice 42", "text": "Charged twice?"},
    )
    return main


def provision_admin_target(
    context: dict[str, Any], ccid: str, receiver: str, component: str | None = None
) -> dict[str, Any]:
    """The tenant the provisioning document is fuzzed on (its own, so that deleting it, rotating its
    secrets or disabling its keys cannot take the other documents' credentials away): one of each
    resource, for the operations on `{id}` and `{name}`."""
    target: dict[str, Any] = {"ccid": ccid}
    context["admin_target"] = target
    admin_ok(context, "POST", "/tenants", {"ccid": ccid, "name": "Fuzz provisioning"})
    t = f"/tenants/{ccid}"
    target["channel_id"] = admin_ok(context, "POST", f"{t}/channels", {"type": "chat", "name": "prov-chat"})["id"]
    context["component_wasm"] = component = component or context.get("component_wasm")
    target["api_key_id"] = admin_ok(
        context, "POST", f"{t}/api-keys", {"name": "prov-key", "permission": "history"}
    )["id"]
    target["agent_id"] = admin_ok(context, "POST", f"{t}/agents", {"username": "prov-agent"})["id"]
    admin_ok(context, "PUT", f"{t}/queues/prov-queue", {"timeoutSeconds": 60})
    target["queue"] = "prov-queue"
    admin_ok(context, "PUT", f"{t}/channels/{target['channel_id']}/routing", {"queue": "prov-queue"})
    # A tenant component (a bot the repository builds), for the components operations.
    target["component"] = None
    if component:
        with open(component, "rb") as file:
            wasm = file.read()
        ok(
            context["base"],
            "POST",
            f"/nexus/v3/provisioning{t}/components/prov-comp/versions?kind=bot",
            headers=admin_headers(context),
            raw=wasm,
            content_type="application/wasm",
        )
        target["component"] = "prov-comp"
    target["webhook_id"] = admin_ok(
        context, "POST", f"{t}/webhooks", {"url": f"{receiver}/hooks", "events": ["*"]}
    )["id"]
    admin_ok(context, "POST", f"{t}/bots", {"name": "prov-bot", "url": f"{receiver}/bot"})
    target["bot"] = "prov-bot"
    # A chat on it starts a webhook delivery: a job for the jobs operations.
    key = admin_ok(context, "POST", f"{t}/api-keys", {"name": "prov-chat-key", "permission": "chat"})["key"]
    ok(
        context["base"],
        "POST",
        "/nexus/v3/chat/sessions",
        headers={"x-api-key": key},
        form=[("data[firstName]", "Bo"), ("data[endpoint]", "prov-chat")],
    )
    target["job_id"] = None
    for _ in range(50):
        jobs = admin_ok(context, "GET", f"{t}/jobs?limit=5")["jobs"]
        if jobs:
            target["job_id"] = jobs[0]["id"]
            break
        time.sleep(0.1)
    return target
