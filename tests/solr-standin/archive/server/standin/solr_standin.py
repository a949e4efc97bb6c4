#!/usr/bin/env python3
"""Solr STAND-IN: a small test double for Apache Solr 9. It is NOT Apache Solr.

It lets the `solr` role and the demo app's django-haystack search be tested on machines that cannot download
Solr: it implements only what they use (../../STANDIN.md), answers in Solr's JSON shapes, refuses what Solr 9
refuses in haystack's stock templates, and answers HTTP 400 "not implemented" to anything else. bin/solr runs
it for `bin/solr start -f` with the include file's SOLR_* settings in the environment; it serves until SIGTERM,
then commits every core. This file is the server (settings, core admin, HTTP); standin_index.py holds the
cores' configuration checks, documents, queries and updates. Python 3 standard library only (it runs under
Debian's /usr/bin/python3).
"""

import datetime
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bin/solr runs Python isolated (-I): no script dir
from standin_index import Core, SolrError, bad, not_implemented, parse_xml, search, update  # noqa: E402

TIP = Path(__file__).resolve().parents[2]  # solr-<version>/
VERSION = (Path(__file__).parent / "VERSION").read_text().strip()
LUCENE = {"9.7.0": "9.11.1"}.get(VERSION, "unknown")
NOTICE = "NOT Apache Solr: a test stand-in implementing the small subset of Solr 9 that the solr role and " \
         "haystack use (see STANDIN.md)"
SETTINGS, LOG_FILES, LOG_LOCK = {}, [], threading.Lock()


def log(level, msg, core=None, src="o.a.s.standin"):
    """Solr-like log lines, on stdout (the journal) and in SOLR_LOGS_DIR/solr.log."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    line = f"{stamp} {level:<5} ({threading.current_thread().name}) [{'   x:' + core if core else '   '}] {src} {msg}"
    with LOG_LOCK:
        print(line, flush=True)
        for file in LOG_FILES:
            file.write(line + "\n")
            file.flush()


class Container:
    """The cores of SOLR_HOME: discovered from core.properties files at start, created, reloaded."""

    def __init__(self, home):
        self.home, self.cores, self.lock = home, {}, threading.Lock()

    def discover(self):
        for props_file in sorted(self.home.rglob("core.properties")):
            props = dict(line.partition("=")[::2] for line in props_file.read_text().splitlines()
                         if "=" in line and not line.startswith(("#", "!")))
            try:
                self.load(props.get("name", props_file.parent.name).strip(), props_file.parent)
            except SolrError:
                pass  # logged; the node starts anyway, as Solr does

    def load(self, name, instance_dir):
        try:
            self.cores[name] = Core(name, instance_dir)
        except (SolrError, OSError) as exc:  # OSError: e.g. a data directory the server's user cannot write
            msg = exc.msg if isinstance(exc, SolrError) else f"{type(exc).__name__}: {exc}"
            log("ERROR", f"Unable to create core [{name}] Caused by: {msg}", name)
            raise SolrError(500, msg) from None
        log("INFO", f"core '{name}' loaded from {instance_dir} ({len(self.cores[name].visible)} documents)", name)

    def core(self, name):
        if name not in self.cores:
            raise SolrError(404, f"Solr has no core named '{name}' (HTTP 404 Not Found)")
        return self.cores[name]

    def create(self, name, instance_dir):
        if not name:
            raise bad("Missing required parameter: name")
        if name in self.cores:
            raise bad(f"Core with name '{name}' already exists.")
        path = Path(os.path.normpath(self.home / (instance_dir or name)))
        if self.home not in path.parents:
            raise bad(f"Error CREATEing SolrCore '{name}': Path {path} must be relative to SOLR_HOME (the stand-in "
                      f"does not implement solr.allowPaths)")
        if (path / "core.properties").exists():
            raise bad(f"Error CREATEing SolrCore '{name}': Could not create a new core in {path} as another core is "
                      f"already defined there")
        try:
            self.load(name, path)
        except SolrError as exc:
            raise bad(f"Error CREATEing SolrCore '{name}': Unable to create core [{name}] Caused by: {exc.msg}")
        (path / "core.properties").write_text(f"#Written by the Solr stand-in (CorePropertiesLocator)\nname={name}\n")

    def reload(self, name):
        core = self.core(name)
        try:
            core.reload()
        except SolrError as exc:  # the running core keeps its previous configuration, as in Solr
            log("ERROR", f"Unable to reload core [{name}] Caused by: {exc.msg}", name)
            raise SolrError(500, f"Error handling 'RELOAD' action: Unable to reload core [{name}] Caused by: {exc.msg}")
        log("INFO", "core reloaded", name)


class Params(dict):
    """Request parameters: the first value by get(), every value by getall()."""

    def __init__(self, multi):
        super().__init__({k: v[0] for k, v in multi.items()})
        self.multi = multi

    def getall(self, key):
        return self.multi.get(key, [])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as pysolr's session expects
    server_version = f"SolrStandin/{VERSION} (NOT Apache Solr)"

    def log_message(self, *args):
        pass

    def do_GET(self):
        started, url = time.time(), urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body, ctype = self.rfile.read(length) if length else b"", self.headers.get("Content-Type") or ""
        multi = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if ctype.startswith("application/x-www-form-urlencoded"):  # pysolr POSTs long queries as a form
            for key, values in urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True).items():
                multi.setdefault(key, []).extend(values)
            body = b""
        path, core_name, status, extra = url.path.rstrip("/"), None, 0, ""
        try:
            with self.server.container.lock:
                answer, core_name, extra = route(self.server.container, path, Params(multi), body, ctype)
        except SolrError as exc:
            status, answer = exc.code, {"error": {"msg": exc.msg, "code": exc.code}}
            log("ERROR" if exc.code >= 500 else "WARN", f"{path}: {exc.msg}", core_name)
        except Exception as exc:  # a bug in the stand-in: say so, with the trace
            status, answer = 500, {"error": {"msg": f"Solr stand-in internal error: {exc!r}",
                                             "trace": traceback.format_exc(), "code": 500}}
            log("ERROR", f"{path}: {traceback.format_exc()}", core_name)
        qtime = int((time.time() - started) * 1000)
        header = {"status": status, "QTime": qtime}
        if multi and not status:
            header["params"] = {k: v if len(v) > 1 else v[0] for k, v in multi.items()}
        data = json.dumps({"responseHeader": header, **answer}).encode("utf-8")
        self.send_response(status or 200)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        params = "&".join(f"{k}={v}" for k, vs in multi.items() for v in vs)
        log("INFO", f"webapp=/solr path={path[5:] if path.startswith('/solr') else path} params={{{params}}}{extra} "
                    f"status={status} QTime={qtime}", core_name, "o.a.s.c.S.Request")

    do_POST = do_GET


def route(container, path, params, body, ctype):
    """Returns (answer, core name, log suffix)."""
    parts = path.split("/")[1:]
    if parts[:1] != ["solr"] or len(parts) < 2:
        raise not_implemented(f"the path {path or '/'} (no admin UI, no v2 API)")
    if parts[1:] == ["admin", "info", "system"]:
        return info_system(container), None, ""
    if parts[1:] == ["admin", "cores"]:
        action, name = (params.get("action") or "STATUS").upper(), params.get("core") or params.get("name")
        if action == "STATUS":
            names = [name] if name else sorted(container.cores)
            return {"status": {n: container.cores[n].status() if n in container.cores else {} for n in names}}, name, ""
        if action == "CREATE":
            container.create(params.get("name"), params.get("instanceDir"))
            return {"core": params["name"]}, name, ""
        if action == "RELOAD":
            container.reload(params.get("core") or "")
            return {}, name, ""
        raise not_implemented(f"the core admin action {action}")
    if parts[1] == "admin":
        raise not_implemented(f"the admin handler {path}")
    name, handler = parts[1], "/".join(parts[2:])
    core = container.core(name)
    if handler == "select":
        answer = search(core, params)
        return answer, name, f" hits={answer['response']['numFound']}"
    if handler == "update":
        s = update(core, params, body, ctype)
        return {}, name, (f" {{add={s['add'][:10]}{'...' if len(s['add']) > 10 else ''}, delete={s['delete']}, "
                          f"deleteByQuery={s['deleteByQuery']}, commit={s['commit']}, optimize={s['optimize']}}} "
                          f"[stand-in: body {ctype or '-'}, {len(body)} bytes]")
    raise not_implemented(f"the request handler /{handler} of core '{name}'")


def info_system(container):
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", SETTINGS["heap"]).groups()
    return {"mode": "std", "host": socket.gethostname(), "solr_home": str(container.home),
            "lucene": {"solr-spec-version": VERSION, "solr-impl-version": f"{VERSION} (Solr stand-in, {NOTICE})",
                       "lucene-spec-version": LUCENE, "lucene-impl-version": LUCENE},
            "jvm": {"name": "none", "version": f"none: the stand-in runs on Python {sys.version.split()[0]}",
                    "memory": {"raw": {"max": int(number) * 1024 ** " kmg".index((unit or " ").lower())}},
                    "jmx": {"commandLineArgs": SETTINGS["args"]}},
            "standin": {"isStandin": True, "notice": NOTICE}}


def main():
    """The server, with the settings bin/solr read from the include file (SOLR_*, in the environment)."""
    env = os.environ
    port, host = int(env.get("SOLR_PORT") or 8983), env.get("SOLR_JETTY_HOST") or "127.0.0.1"
    home, heap = Path(env.get("SOLR_HOME") or TIP / "server" / "solr"), env.get("SOLR_HEAP") or "512m"
    if not home.is_dir():
        print(f"\nSolr home directory {home} not found!\n")
        return 1
    if not re.fullmatch(r"\d+[kKmMgG]?", heap):  # the JVM refuses it
        print(f"Invalid initial heap size: -Xms{heap}\nError: Could not create the Java Virtual Machine.",
              file=sys.stderr)
        return 1
    logs = Path(env.get("SOLR_LOGS_DIR") or TIP / "server" / "logs")
    logs.mkdir(parents=True, exist_ok=True)
    LOG_FILES.append(open(logs / "solr.log", "a"))
    SETTINGS.update(heap=heap, args=[f"-Xms{heap}", f"-Xmx{heap}", f"-Djetty.port={port}", f"-Djetty.host={host}",
                                     f"-Dsolr.solr.home={home}", f"-Dsolr.log.dir={logs}",
                                     *(env.get("SOLR_OPTS") or "").split()])
    log("INFO", f"Solr stand-in {VERSION} starting ({NOTICE}): port={port} host={host} solr_home={home} heap={heap} "
                f"(accepted; a stand-in has no JVM heap) python={sys.executable}")
    try:  # solr.xml's entries have no effect here, but Solr refuses a broken one
        parse_xml(home / "solr.xml" if (home / "solr.xml").is_file() else TIP / "server" / "solr" / "solr.xml")
    except SolrError as exc:
        log("ERROR", f"Could not load SOLR configuration: {exc.msg}")
        return 1
    try:
        ThreadingHTTPServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        log("ERROR", f"Failed to start the HTTP listener on {host}:{port}: {exc}")
        return 1
    server.daemon_threads, server.container = True, Container(home)
    server.container.discover()

    def stop(signum, _frame):
        log("INFO", f"Received signal {signum}: shutting down (committing open cores)")
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log("INFO", f"Started Solr stand-in on {host}:{port} with {len(server.container.cores)} core(s)")
    server.serve_forever(poll_interval=0.2)
    with server.container.lock:
        for core in server.container.cores.values():  # Solr commits on close (commitOnClose defaults to true)
            core.commit()
    log("INFO", "Solr stand-in stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
