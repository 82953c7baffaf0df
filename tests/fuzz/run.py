#!/usr/bin/env python3
"""Schema-driven fuzzing of every OpenAPI document in openapi/ against a real `nexus up`.

Run it through scripts/fuzz.sh (which installs schemathesis into a virtualenv and starts this with
that virtualenv's Python). What it does:

1. a fresh PostgreSQL database (a unique name) and a unique Redis key prefix, on the real servers
   (NEXUS_FUZZ_POSTGRES_URL / NEXUS_FUZZ_REDIS_URL, else NEXUS_TEST_*, else 127.0.0.1:5432 as
   postgres with trust auth and 127.0.0.1:6379), loopback addresses only;
2. `nexus up` ($NEXUS_BIN, default $CARGO_TARGET_DIR/debug/nexus) on 127.0.0.1, a port the OS
   picks, with spin.toml whose component sources are the built components
   ($NEXUS_WASM_DIR, default $CARGO_TARGET_DIR/wasm32-wasip2/release) and whose outbound HTTP is
   narrowed to loopback (so that no URL the fuzzer makes up is ever called); waits for /readyz;
3. provisions, through the provisioning API, the credentials each document needs (tests/fuzz/
   nexus_api.py): a tenant with chat, messaging, sms, email and securemail channels, chat,
   history, securemail and outbound API keys, a suppression and a template, a queue, an agent
   and its token holding a chat, a live chat session and its clientToken, a stored file; a
   second tenant for the provisioning document;
4. runs `schemathesis run` on each document in turn (tests/fuzz/hooks.py puts each document's
   credentials and signatures on every request), checking not_a_server_error,
   status_code_conformance, content_type_conformance and response_schema_conformance, with a
   fixed seed, NEXUS_FUZZ_MAX_EXAMPLES cases per operation and phase (40), a time budget per
   document (NEXUS_FUZZ_DOC_BUDGET, 180 s) and for all of them (NEXUS_FUZZ_BUDGET, 600 s): a
   document over its budget, or not run for want of time, fails;
5. stops nexus (SIGTERM), drops the database and the Redis keys, prints a summary per document
   and `N passed, N failed` (documents); exits 1 when any document failed.

Each document's full schemathesis output (with a curl command per failure) and its JUnit report
are in NEXUS_FUZZ_REPORT_DIR (default target/fuzz-report), with nexus's log.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import psycopg
import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import nexus_api  # noqa: E402

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# The provisioning document runs last: it fuzzes a tenant of its own, but schemathesis also reuses
# what answers returned (the ccids GET /tenants lists), so it may delete the other documents'
# tenant too.
LAST = ("provisioning",)


def env(name: str, default: str) -> str:
    value = os.environ.get(name, "")
    return value if value else default


def log(message: str) -> None:
    print(f"fuzz: {message}", flush=True)


def require_loopback(url: str, what: str) -> None:
    host = urllib.parse.urlparse(url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        sys.exit(f"fuzz: {what} ({url}) is not on a loopback address; the fuzz run reaches nothing else")


class Settings:
    def __init__(self) -> None:
        target = Path(env("CARGO_TARGET_DIR", "target"))
        if not target.is_absolute():
            target = ROOT / target
        self.target = target
        self.nexus = Path(env("NEXUS_BIN", str(target / "debug" / "nexus")))
        self.wasm_dir = Path(env("NEXUS_WASM_DIR", str(target / "wasm32-wasip2" / "release")))
        self.redis_url = env("NEXUS_FUZZ_REDIS_URL", env("NEXUS_TEST_REDIS_URL", "redis://127.0.0.1:6379"))
        self.postgres_url = env(
            "NEXUS_FUZZ_POSTGRES_URL",
            env("NEXUS_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        )
        self.max_examples = int(env("NEXUS_FUZZ_MAX_EXAMPLES", "40"))
        self.seed = int(env("NEXUS_FUZZ_SEED", "20240613"))
        self.doc_budget = float(env("NEXUS_FUZZ_DOC_BUDGET", "180"))
        self.budget = float(env("NEXUS_FUZZ_BUDGET", "600"))
        self.workers = env("NEXUS_FUZZ_WORKERS", "1")
        self.docs = [name for name in env("NEXUS_FUZZ_DOCS", "").split(",") if name]
        report = Path(env("NEXUS_FUZZ_REPORT_DIR", str(ROOT / "target" / "fuzz-report")))
        self.report_dir = report if report.is_absolute() else ROOT / report
        require_loopback(self.redis_url, "NEXUS_FUZZ_REDIS_URL")
        require_loopback(self.postgres_url, "NEXUS_FUZZ_POSTGRES_URL")
        if not self.nexus.exists():
            sys.exit(f"fuzz: {self.nexus} is not built: cargo build --locked -p nexus-host (or set NEXUS_BIN)")
        if not self.wasm_dir.is_dir():
            sys.exit(f"fuzz: {self.wasm_dir} holds no components: run scripts/build-components.sh (or set NEXUS_WASM_DIR)")


# --- The services ------------------------------------------------------------------------------


class Database:
    """A database of its own on the real PostgreSQL, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"nexus_fuzz_{uuid.uuid4().hex}"
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {self.name}")
        parsed = urllib.parse.urlparse(admin_url)
        self.url = urllib.parse.urlunparse(parsed._replace(path=f"/{self.name}"))

    def drop(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def drop_redis_keys(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        batch.append(key)
        if len(batch) >= 500:
            removed += client.delete(*batch)
            batch.clear()
    if batch:
        removed += client.delete(*batch)
    client.close()
    return removed


class Receiver:
    """The far side of every outbound call nexus makes during the run (messaging webhooks, the SMS
    and email providers' APIs, webhooks, bots): a loopback server that answers 200 with what each
    of them expects back."""

    def __init__(self) -> None:
        self.count = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                receiver.count += 1
                ident = uuid.uuid4().hex
                body = json.dumps(
                    {"messageId": ident, "sid": f"SM{ident}", "id": ident, "results": {"id": ident}, "actions": []}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET = do_PUT = answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


def derived_manifest(settings: Settings, directory: Path, receiver_url: str) -> Path:
    """spin.toml with the built components' paths, and outbound HTTP narrowed to the run's own
    receiver (a made-up URL to any other port, of this machine or another, is refused)."""
    text = (ROOT / "spin.toml").read_text(encoding="utf-8")

    def source(match: re.Match[str]) -> str:
        path = settings.wasm_dir / match.group(1)
        if not path.exists():
            sys.exit(f"fuzz: {path} is not built: run scripts/build-components.sh first")
        return f'source = "{path}"'

    text = re.sub(r'source = "target/wasm32-wasip2/release/([^"/]+\.wasm)"', source, text)
    # The fuzzer makes up webhook, bot and channel URLs: none may reach anything but the receiver.
    text = text.replace('"http://*:*", "https://*:*"', f'"{receiver_url}"')
    manifest = tomllib.loads(text)
    for name, component in manifest.get("component", {}).items():
        for host in component.get("allowed_outbound_hosts", []):
            if "*" in host.split("://", 1)[-1].split(":", 1)[0]:
                sys.exit(f"fuzz: component {name} may still reach {host}; the manifest changed: update run.py")
    path = directory / "spin.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Nexus:
    def __init__(self, settings: Settings, manifest: Path, directory: Path, environment: dict[str, str]) -> None:
        if not settings.nexus.exists():
            sys.exit(f"fuzz: {settings.nexus} is not built: cargo build --locked -p nexus-host")
        self.log_path = directory / "nexus.log"
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115
        child_env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
        child_env.update(environment)
        self.process = subprocess.Popen(
            [
                str(settings.nexus),
                "up",
                "--manifest",
                str(manifest),
                "--data-dir",
                str(directory / "data"),
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--max-concurrent-requests",
                "64",
            ],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            cwd=directory,
        )
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(self.process.stdout.readline().decode()), daemon=True)
        reader.start()
        reader.join(300)
        line = first[0].strip() if first else ""
        if not line.startswith("nexus is serving "):
            self.stop()
            sys.exit(f"fuzz: nexus did not start ({line!r}); its log:\n{self.log_path.read_text()[-5000:]}")
        self.base = line.removeprefix("nexus is serving ").strip()
        require_loopback(self.base, "nexus")
        # Keep draining stdout so that nexus never blocks on a full pipe.
        threading.Thread(target=lambda: self.process.stdout.read(), daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            status, answer = nexus_api.call(self.base, "GET", "/readyz")
            if status == 200:
                break
            if time.monotonic() > deadline:
                self.stop()
                sys.exit(f"fuzz: nexus is not ready: {status} {answer}")
            time.sleep(0.2)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode


# --- Fuzzing -----------------------------------------------------------------------------------


def documents(settings: Settings) -> list[str]:
    names = sorted(path.stem for path in (ROOT / "openapi").glob("*.json"))
    if settings.docs:
        unknown = set(settings.docs) - set(names)
        if unknown:
            sys.exit(f"fuzz: no such document: {', '.join(sorted(unknown))}")
        names = [name for name in names if name in settings.docs]
    return [name for name in names if name not in LAST] + [name for name in LAST if name in names]


def junit_counts(path: Path) -> tuple[int, int, int]:
    """Operations tested, failed and errored, from schemathesis's JUnit report."""
    if not path.exists():
        return 0, 0, 0
    root = ET.parse(path).getroot()
    cases = root.iter("testcase")
    total = failed = errored = 0
    for case in cases:
        total += 1
        if case.find("failure") is not None:
            failed += 1
        if case.find("error") is not None:
            errored += 1
    return total, failed, errored


def fuzz_document(
    settings: Settings, name: str, base: str, context_path: Path, work: Path, budget: float
) -> dict[str, Any]:
    report = settings.report_dir / name
    report.mkdir(parents=True, exist_ok=True)
    junit = report / "junit.xml"
    junit.unlink(missing_ok=True)
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        str(ROOT / "openapi" / f"{name}.json"),
        "--url",
        base,
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(settings.max_examples),
        "--seed",
        str(settings.seed),
        "--workers",
        settings.workers,
        "--generation-database",
        "none",
        "--continue-on-failure",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "20",
        "--output-sanitize",
        "false",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
    ]
    child_env = dict(os.environ)
    child_env.update(
        {
            "SCHEMATHESIS_HOOKS": "hooks",
            "PYTHONPATH": str(HERE) + os.pathsep + child_env.get("PYTHONPATH", ""),
            "NEXUS_FUZZ_DOC": name,
            "NEXUS_FUZZ_CONTEXT": str(context_path),
            "PYTHONHASHSEED": "0",
            "NEXUS_FUZZ_STATS": str(report / "statuses.json"),
            "NEXUS_FUZZ_UNDOCUMENTED": str(report / "undocumented.json"),
        }
    )
    output_path = report / "schemathesis.log"
    started = time.monotonic()
    timed_out = False
    with open(output_path, "wb") as output:
        process = subprocess.Popen(
            command, env=child_env, stdout=output, stderr=subprocess.STDOUT, cwd=work, start_new_session=True
        )
        try:
            code = process.wait(budget)
        except (subprocess.TimeoutExpired, KeyboardInterrupt) as stopped:
            timed_out = True
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if isinstance(stopped, KeyboardInterrupt):
                raise
            code = None
    seconds = time.monotonic() - started
    operations, failed, errored = junit_counts(junit)
    statuses: dict[str, Any] = {}
    if (report / "statuses.json").exists():
        statuses = json.loads((report / "statuses.json").read_text(encoding="utf-8"))
    undocumented: dict[str, Any] = {}
    if (report / "undocumented.json").exists():
        undocumented = json.loads((report / "undocumented.json").read_text(encoding="utf-8"))
    return {
        "statuses": statuses,
        "undocumented": undocumented,
        "name": name,
        "passed": code == 0 and not timed_out,
        "code": code,
        "timed_out": timed_out,
        "seconds": seconds,
        "operations": operations,
        "failed": failed,
        "errored": errored,
        "output": output_path,
    }


def documented_operations(name: str) -> set[str]:
    document = json.loads((ROOT / "openapi" / f"{name}.json").read_text(encoding="utf-8"))
    return {
        f"{method.upper()} {path}"
        for path, item in document.get("paths", {}).items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    }


def failure_section(path: Path) -> str:
    """What schemathesis printed from its list of failures and errors on."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for marker in ("=== FAILURES", "FAILURES ===", "=== ERRORS", "ERRORS ==="):
        at = text.find(marker)
        if at >= 0:
            return text[text.rfind("\n", 0, at) + 1 :]
    return text[-6000:]


def server_errors(base: str) -> list[str]:
    """The 5xx answers nexus counted, per component, from /metrics."""
    status, text = nexus_api.call(base, "GET", "/metrics")
    if status != 200 or not isinstance(text, str):
        return [f"/metrics answered {status}"]
    lines = []
    for line in text.splitlines():
        if line.startswith(("nexus_http_requests_total{", "nexus_guest_traps_total{")):
            if line.startswith("nexus_guest_traps_total") or re.search(r'status="5\d\d"', line):
                lines.append(line)
    return lines


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def log_warnings(path: Path) -> list[str]:
    """nexus's WARN and ERROR log lines, counted by message."""
    counts: dict[str, int] = {}
    if not path.exists():
        return []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("level") in ("WARN", "ERROR"):
            fields = event.get("fields", {})
            key = f"{event['level']} {event.get('target', '')}: {fields.get('message', '')}"
            counts[key] = counts.get(key, 0) + 1
    return [f"{count}x {key}" for key, count in sorted(counts.items(), key=lambda item: -item[1])]


def main() -> int:
    # A stopped run still stops nexus and drops what it made (a background job may have been
    # started with SIGINT ignored: take it back).
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    settings = Settings()
    settings.report_dir.mkdir(parents=True, exist_ok=True)
    names = documents(settings)
    started = time.monotonic()
    log(
        f"{len(names)} documents, seed {settings.seed}, at most {settings.max_examples} cases per operation "
        f"and phase, {settings.doc_budget:.0f} s per document, {settings.budget:.0f} s in all"
    )
    try:
        redis.Redis.from_url(settings.redis_url).ping()
        database = Database(settings.postgres_url)
    except (redis.RedisError, psycopg.Error) as err:
        sys.exit(f"fuzz: Redis at {settings.redis_url} or PostgreSQL at {settings.postgres_url} is not reachable "
                 f"({err}): run scripts/services.sh")
    work = Path(tempfile.mkdtemp(prefix="nexus-fuzz-"))
    prefix = f"nexus_fuzz_{uuid.uuid4().hex}:"
    receiver = Receiver()
    nexus: Nexus | None = None
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        admin_token = secrets.token_urlsafe(32)
        environment = {
            "REDIS_URL": settings.redis_url,
            "DATABASE_URL": database.url,
            "SPIN_VARIABLE_ADMIN_TOKEN": admin_token,
            "SPIN_VARIABLE_CREDENTIALS_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "SPIN_VARIABLE_REDIS_KEY_PREFIX": prefix,
            # The receiver is on loopback: the operator's setting that lets tenants name it.
            "SPIN_VARIABLE_ALLOW_PRIVATE_OUTBOUND": "true",
            "NEXUS_CACHE_DIR": str(settings.target / "nexus-fuzz-compile-cache"),
            "RUST_LOG": "info",
        }
        manifest = derived_manifest(settings, work, receiver.url)
        log(f"database {database.name}, Redis prefix {prefix}, starting {settings.nexus}")
        nexus = Nexus(settings, manifest, work, environment)
        log(f"nexus serves {nexus.base} (ready after {time.monotonic() - started:.0f} s)")
        context: dict[str, Any] = {"base": nexus.base, "admin_token": admin_token, "receiver": receiver.url}
        nexus_api.provision_main(context, f"fuzz-main-{uuid.uuid4().hex[:8]}", receiver.url)
        nexus_api.provision_admin_target(
            context, f"fuzz-prov-{uuid.uuid4().hex[:8]}", receiver.url, str(settings.wasm_dir / "faq_bot.wasm")
        )
        context_path = work / "context.json"
        context_path.write_text(json.dumps(context, indent=2), encoding="utf-8")
        (settings.report_dir / "context.json").write_text(json.dumps(context, indent=2), encoding="utf-8")
        log("provisioned: tenants, channels, API keys, a queue, an agent, a chat session")
        deadline = time.monotonic() + settings.budget
        for name in names:
            budget = min(settings.doc_budget, deadline - time.monotonic())
            if budget <= 0:
                log(f"the run's budget ({settings.budget:.0f} s) is spent: {name} and what follows are not run")
                break
            result = fuzz_document(settings, name, nexus.base, context_path, work, budget)
            results.append(result)
            verdict = "passed" if result["passed"] else ("TIMED OUT" if result["timed_out"] else "FAILED")
            log(
                f"{name}: {verdict} in {result['seconds']:.0f} s ({result['operations']} operations, "
                f"{result['failed']} failed, {result['errored']} errored)"
            )
            if nexus.process.poll() is not None:
                log(f"nexus exited with {nexus.process.returncode} during {name}")
                break
        errors = server_errors(nexus.base)
        if os.environ.get("NEXUS_FUZZ_HOLD"):
            log(f"NEXUS_FUZZ_HOLD: nexus keeps serving {nexus.base} (the curl commands reach it); Ctrl-C ends")
            try:
                while nexus.process.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        code = nexus.stop() if nexus else None
        receiver.stop()
        database.drop()
        removed = drop_redis_keys(settings.redis_url, prefix)
        if nexus:
            (settings.report_dir / "nexus.log").write_bytes(nexus.log_path.read_bytes())
        shutil.rmtree(work, ignore_errors=True)
        log(f"nexus stopped ({code}); dropped {database.name} and {removed} Redis keys")

    for result in results:
        if not result["passed"]:
            print(f"\n===== {result['name']}: {result['output']} =====")
            print(failure_section(result["output"]))
    warnings = log_warnings(settings.report_dir / "nexus.log")
    if warnings:
        print("\nnexus logged (WARN and ERROR):")
        for line in warnings[:30]:
            print(f"  {line}")
    if errors:
        print("\n5xx answers and traps nexus counted (/metrics):")
        for line in errors:
            print(f"  {line}")
    print("\nStatuses answered that the document does not list for the operation, as schemathesis's")
    print("checks see them (in the failures above) and as they let them pass (content-type probes):")
    for result in results:
        probes: dict[tuple[str, str], list[str]] = {}
        for operation, by_status in sorted(result["undocumented"].items()):
            for status, entry in sorted(by_status.items()):
                if entry["probe"]:
                    probes.setdefault((status, entry["message"].split(":")[0]), []).append(operation)
                    continue
                print(f"  {result['name']}: {operation} -> {status} ({entry['count']}x): {entry['message'][:200]}")
                print(f"      {entry['curl'][:800]}")
        for (status, message), operations in sorted(probes.items()):
            print(f"  {result['name']}: {status} to a body of a media type not documented ({message}), {len(operations)} operations:")
            for operation in operations:
                print(f"      {operation}")
    print("\nDocumented operations no case got a 2xx from (the cases never got past the checks):")
    for result in results:
        documented = documented_operations(result["name"])
        for operation, seen in result["statuses"].items():
            counts = seen["statuses"]
            if operation in documented and not any(status.startswith("2") for status in counts):
                print(f"  {result['name']}: {operation} {dict(sorted(counts.items()))}")
    print("\nPer document:")
    for result in results:
        verdict = "passed" if result["passed"] else ("timed out" if result["timed_out"] else "failed")
        classes: dict[str, int] = {}
        for seen in result["statuses"].values():
            for status, count in seen["statuses"].items():
                classes[status[0] + "xx"] = classes.get(status[0] + "xx", 0) + count
        answered = ", ".join(f"{name} {count}" for name, count in sorted(classes.items()))
        print(
            f"  {result['name']:<14} {verdict:<9} {result['operations']:>3} operations, {result['failed']:>2} failed, "
            f"{result['errored']:>2} errored, {result['seconds']:4.0f} s; requests: {answered or 'none'}"
        )
    skipped = [name for name in names if name not in {result["name"] for result in results}]
    for name in skipped:
        print(f"  {name:<14} not run")
    print(f"  total {time.monotonic() - started:.0f} s; reports in {settings.report_dir}")
    passed = sum(1 for result in results if result["passed"])
    failed = len(names) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as stopped:
        print(f"fuzz: stopped ({stopped}); nexus, the database and the Redis keys are cleaned up", file=sys.stderr)
        sys.exit(130)
