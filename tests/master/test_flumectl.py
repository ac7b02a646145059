"""flumectl's main() against a real master API (uvicorn in a thread, port 0) over a real
ZooKeeper: outputs, JSON and exit statuses."""
from __future__ import annotations

import json
import threading
import time

import pytest

from flume_og.master import flumectl
from flume_og.master.api import create_app
from flume_og.master.service import MasterService
from tests.master.serving import serve
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

TOKEN = "flumectl-test-token-0123456789"


@pytest.fixture
def service(store, tmp_path):
    svc = MasterService(store, tmp_path / "master-data", name="ctl-master")
    yield svc
    svc.close()


@pytest.fixture
def url(service, monkeypatch):
    monkeypatch.delenv("FLUME_TOKEN", raising=False)
    server, thread, url = serve(create_app(service))
    monkeypatch.setenv("FLUME_MASTER", url)
    yield url
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def locked_url(service, monkeypatch):
    monkeypatch.delenv("FLUME_TOKEN", raising=False)
    server, thread, url = serve(create_app(service, token=TOKEN))
    yield url
    server.should_exit = True
    thread.join(10)


def ctl(capsys, *argv):
    code = flumectl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_config_and_listings(url, capsys, store):
    code, out, err = ctl(capsys, "config", "node1", 'tail("/var/log/a.log")',
                         "{ batch(10) => null }")
    assert (code, err) == (0, "") and out.strip() == "configured node1 (version 0)"
    assert store.get_logical("node1").source == 'tail("/var/log/a.log")'
    assert ctl(capsys, "config", "node1", "flowX", "asciisynth(1)", "null")[0] == 0
    assert ctl(capsys, "map", "phys1", "node1")[0] == 0
    code, out, _ = ctl(capsys, "status")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["LOGICAL", "NODE", "PHYSICAL", "HOST", "STATE",
                                              "VERSION", "FLOW", "EVENTS", "IN", "EVENTS",
                                              "OUT", "BACKLOG", "LAST", "ERROR"]
    assert lines[1].split() == ["node1", "phys1", "-", "LOST", "1*", "flowX", "-", "-", "-",
                                "-"]
    assert "PHYSICAL NODE" in out and "phys1" in lines[-1] and "NO" in lines[-1]
    code, out, _ = ctl(capsys, "configs")
    assert code == 0 and "node1" in out and "asciisynth(1)" in out and "flowX" in out
    code, out, _ = ctl(capsys, "mappings")
    assert out.splitlines()[1].split() == ["phys1", "node1"]
    code, out, _ = ctl(capsys, "flows")
    assert code == 0 and out.splitlines()[1].split()[0] == "flowX"
    code, out, _ = ctl(capsys, "commands", "--limit", "3")
    rows = out.splitlines()[1:]
    assert code == 0 and len(rows) == 3 and "status" not in out
    assert rows[0].split()[3:5] == ["SUCCEEDED", "map"]


def test_json_output(url, capsys):
    ctl(capsys, "config", "n1", "asciisynth(1)", "null")
    code, out, _ = ctl(capsys, "--json", "status")
    assert code == 0 and json.loads(out)["logical"][0]["name"] == "n1"
    code, out, _ = ctl(capsys, "--json", "noop")
    assert code == 0 and json.loads(out)["state"] == "SUCCEEDED"
    code, out, _ = ctl(capsys, "--json", "configs")
    assert json.loads(out)[0]["source"] == "asciisynth(1)"


def test_spec_error_prints_the_caret_and_exits_2(url, capsys, store):
    code, out, err = ctl(capsys, "config", "n1", "asciisynth(1)", "{ batch(10) => nosink }")
    assert code == 2 and out == ""
    assert "unknown sink 'nosink'" in err
    assert err.rstrip("\n").endswith("\n" + " " * 17 + "^")
    assert store.get_logical("n1") is None
    code, out, err = ctl(capsys, "--json", "config", "n1", "nosource", "null")
    assert code == 2 and json.loads(out)["errors"][0]["part"] == "source"


def test_usage_errors_exit_2(url, capsys):
    assert ctl(capsys, "config", "n1", "null")[0] == 2
    assert ctl(capsys, "map", "p1")[0] == 2
    assert ctl(capsys, "nosuchcommand")[0] == 2
    code, _, err = ctl(capsys, "noop", "soon")
    assert code == 2 and "MS must be a whole number" in err
    code, _, err = ctl(capsys, "wait-active", "never", "n1")
    assert code == 2 and "bad timeout" in err


def test_failed_command_exits_1(url, capsys):
    code, out, err = ctl(capsys, "unmap", "p1", "nobody")
    assert code == 1 and out == ""
    assert err.strip() == "flumectl: unmap failed: nobody is not mapped to p1"
    assert ctl(capsys, "unconfig", "nobody")[0] == 1


def test_every_command_through_the_cli(url, capsys, store, tmp_path):
    spec = tmp_path / "cluster.flume"
    spec.write_text("a : asciisynth(1) | null ;\n// flow: f2\nb : asciisynth(2) | null ;\n")
    assert ctl(capsys, "multiconfig", f"@{spec}")[:2] == (0, "configured 2 logical node(s)\n")
    assert store.get_logical("b").flow == "f2"
    assert ctl(capsys, "multiconfig", "c : asciisynth(3) | null")[0] == 0
    assert ctl(capsys, "spawn", "p1", "a")[0] == 0
    assert ctl(capsys, "refresh", "a")[0] == 0 and store.get_logical("a").refresh == 1
    assert ctl(capsys, "refreshAll")[0] == 0 and store.get_logical("c").refresh == 1
    assert ctl(capsys, "setChokeLimit", "p1", "ch", "100")[0] == 0
    assert store.get_chokes("p1") == {"ch": 100}
    code, out, _ = ctl(capsys, "save", "saved.flume")
    assert code == 0 and "saved 3" in out
    assert ctl(capsys, "unconfig", "c")[0] == 0
    assert ctl(capsys, "load", "saved.flume")[0] == 0 and store.get_logical("c")
    assert ctl(capsys, "unmap-all")[0] == 0 and store.get_mapping("p1") == []
    assert ctl(capsys, "decommission", "b")[0] == 0 and store.get_logical("b") is None
    assert ctl(capsys, "purge", "p1")[0] == 0 and "p1" not in store.list_mappings()
    code, out, _ = ctl(capsys, "purgeAll")
    assert code == 0 and "no physical node to purge" in out
    assert ctl(capsys, "noop", "10")[:2] == (0, "noop (10 ms)\n")


def report(store, physical, name, state, version):
    store.put_status(physical, {"host": "h", "updated": int(time.time() * 1000),
                                "logical": {name: {"state": state, "version": version}}})


def test_wait_active_and_done(url, capsys, store):
    store.register_physical("p1", {"host": "h"})
    ctl(capsys, "map", "p1", "n1")
    ctl(capsys, "config", "n1", "asciisynth(5)", "null")
    report(store, "p1", "n1", "CONFIGURING", 0)
    result = {}
    waiter = threading.Thread(target=lambda: result.setdefault(
        "code", flumectl.main(["wait-active", "10s", "n1"])))
    waiter.start()
    seen = []

    def progress_shown() -> bool:  # the waiter shows progress before it is done
        seen.append(capsys.readouterr().out)
        return "CONFIGURING" in "".join(seen)
    wait_until(progress_shown, 10, "the waiter's progress")
    out = "".join(seen)
    report(store, "p1", "n1", "ACTIVE", 0)
    waiter.join(15)
    out += capsys.readouterr().out
    assert result["code"] == 0
    assert "n1: CONFIGURING version 0\n" in out and out.rstrip().endswith("all 1 node(s) ACTIVE")
    # ACTIVE at an older version is not enough
    ctl(capsys, "config", "n1", "asciisynth(6)", "null")
    code, out, err = ctl(capsys, "wait-active", "300ms", "n1")
    assert code == 1 and "n1: ACTIVE version 0 (configured: version 1)" in out
    assert "timed out" in err
    report(store, "p1", "n1", "IDLE", 1)
    code, out, _ = ctl(capsys, "waitForNodesDone", "5000", "n1")
    assert code == 0 and "all 1 node(s) IDLE" in out
    t = time.monotonic()
    code, out, err = ctl(capsys, "wait-done", "30s", "n1", "ghost")
    assert code == 1 and "no logical node named ghost (known: n1)" in err
    assert time.monotonic() - t < 10         # at once, not after the 30 s


def test_options_anywhere_filters_and_whole_specs(url, capsys, store):
    store.register_physical("p1", {"host": "h"})
    long_sink = "{ " + " => ".join(['value("k%d", "v")' % i for i in range(12)]) + " => null }"
    ctl(capsys, "config", "n1", "asciisynth(5)", long_sink)
    ctl(capsys, "config", "n2", "asciisynth(6)", "null")
    ctl(capsys, "map", "p1", "n1")
    code, out, err = ctl(capsys, "status", "--json")          # the option after the command
    assert code == 0 and {r["name"] for r in json.loads(out)["logical"]} == {"n1", "n2"}
    code, out, _ = ctl(capsys, "status", "n2", "--json")
    assert [r["name"] for r in json.loads(out)["logical"]] == ["n2"]
    code, out, _ = ctl(capsys, "status", "p1")                  # a physical node's rows
    assert "n1" in out and "n2" not in out.split("PHYSICAL NODE")[0]
    code, _, err = ctl(capsys, "status", "nobody")
    assert code == 1 and "no node named nobody" in err
    code, out, _ = ctl(capsys, "configs", "n1")
    assert long_sink in out and "..." not in out and "n2" not in out
    report(store, "p1", "n1", "ACTIVE", 0)
    code, out, _ = ctl(capsys, "wait-active", "3", "n1", "--json")   # 3 s, not 3 ms
    assert code == 0 and json.loads(out)["n1"]["state"] == "ACTIVE"
    assert flumectl.parse_timeout("3") == 3.0 and flumectl.parse_timeout("2m") == 120.0
    assert flumectl.parse_timeout("1h") == 3600.0 and flumectl.parse_timeout("0") is None


def test_token(locked_url, capsys, tmp_path, monkeypatch, store):
    code, _, err = ctl(capsys, "--master", locked_url, "noop")
    assert code == 1 and "needs an access token" in err
    assert ctl(capsys, "--master", locked_url, "status")[0] == 0  # reads stay open
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert ctl(capsys, "--master", locked_url, "--token-file", str(token_file),
               "noop")[0] == 0
    monkeypatch.setenv("FLUME_TOKEN", TOKEN)
    assert ctl(capsys, "--master", locked_url, "config", "n1", "null", "null")[0] == 0
    assert store.get_logical("n1") is not None
    code, _, err = ctl(capsys, "--token-file", str(tmp_path / "missing"), "noop")
    assert code == 2 and "cannot read token file" in err


def test_unreachable_master_is_one_line(capsys, monkeypatch):
    from tests.conftest import free_port
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = ctl(capsys, "--master", url, "status")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"flumectl: cannot reach the master at {url}")
    monkeypatch.setenv("FLUME_MASTER", url)
    assert ctl(capsys, "noop")[2].startswith(f"flumectl: cannot reach the master at {url}")


def test_help(capsys):
    code, out, _ = ctl(capsys, "--help")
    assert code == 0 and "wait-active" in out and "exit status" in out
    code, out, _ = ctl(capsys, "config", "--help")
    assert code == 0 and "NODE [FLOW] SOURCE SINK" in out


def test_read_token_and_hidden_passwords(service, capsys, tmp_path, monkeypatch, store):
    monkeypatch.delenv("FLUME_TOKEN", raising=False)
    server, thread, url = serve(create_app(service, token=TOKEN,
                                           read_token="ctl-read-token-0123456789"))
    try:
        code, _, err = ctl(capsys, "--master", url, "configs")
        assert code == 1 and "needs an access token to read" in err
        monkeypatch.setenv("FLUME_TOKEN", TOKEN)
        assert ctl(capsys, "--master", url, "config", "n1", "null",
                   'dfs("ftp://KEY:SeCrEt@bucket/x")')[0] == 0
        monkeypatch.setenv("FLUME_TOKEN", "ctl-read-token-0123456789")
        for cmd in ("configs", "status", "commands"):
            code, out, _ = ctl(capsys, "--master", url, "--json", cmd)
            assert code == 0 and "SeCrEt" not in out and "KEY:***@bucket" in out, cmd
        assert store.get_logical("n1").sink == 'dfs("ftp://KEY:SeCrEt@bucket/x")'
    finally:
        server.should_exit = True
        thread.join(10)


def test_export_then_apply_changes_nothing_and_apply_shows_the_diff(url, capsys, store,
                                                                   tmp_path):
    ctl(capsys, "config", "n1", "flowA", "asciisynth(5)", 'dfs("ftp://KEY:SeCrEt@b/p")')
    ctl(capsys, "config", "n2", "asciisynth(6)", "null")
    code, out, err = ctl(capsys, "export", "-o", str(tmp_path / "all.flume"))
    assert code == 0 and "exported 2 configuration(s)" in out
    text = (tmp_path / "all.flume").read_text()
    assert "// flow: flowA" in text and "SeCrEt" not in text     # passwords hidden
    code, out, err = ctl(capsys, "apply", "-f", str(tmp_path / "all.flume"))
    assert (code, err) == (0, "") and "0 to change, 2 unchanged" in out
    changed = text.replace("asciisynth(6)", "asciisynth(7)") + "n3 : null | null ;\n"
    (tmp_path / "next.flume").write_text(changed)
    code, out, _ = ctl(capsys, "apply", "-f", str(tmp_path / "next.flume"), "--dry-run")
    assert code == 0 and "~ n2\n    - n2 : asciisynth(6) | null ;" in out
    assert "+ n3 : null | null ;  (flow flowA)" in out    # after the file's last flow line
    assert "2 to change, 1 unchanged (dry run: nothing changed)" in out
    assert store.get_logical("n2").source == "asciisynth(6)" and store.get_logical("n3") is None
    code, out, _ = ctl(capsys, "apply", "-f", str(tmp_path / "next.flume"))
    assert code == 0 and "configured 2 logical node(s), 1 unchanged" in out
    assert store.get_logical("n2").source == "asciisynth(7)"
    assert store.get_logical("n1").sink == 'dfs("ftp://KEY:SeCrEt@b/p")'   # put back
    (tmp_path / "bad.flume").write_text("n4 : nosuchsource | null ;")
    code, _, err = ctl(capsys, "apply", "-f", str(tmp_path / "bad.flume"))
    assert code == 2 and "nosuchsource" in err


def test_status_shows_events_and_what_waits_on_disk(url, capsys, store):
    store.register_physical("p1", {"host": "h"})
    ctl(capsys, "config", "n1", "asciisynth(5)", "null")
    ctl(capsys, "map", "p1", "n1")
    store.put_status("p1", {"host": "h", "updated": int(time.time() * 1000), "logical": {
        "n1": {"state": "ACTIVE", "version": 0, "events_in": 1500,
               "counters": {"events_in": 1500, "events_out": 1200, "wal_bytes": 3 << 20,
                            "acks_pending": 4}}}})
    # the master's view learns the status through a watch: wait for it, then read the row
    def reported_row():
        row = ctl(capsys, "status", "n1")[1].splitlines()[1]
        return row if "1500" in row else None
    row = wait_until(reported_row, 20, "the reported status")
    assert "1200" in row and "3.0 MB, 4 acks" in row


def test_status_says_when_a_failed_flow_is_opened_again(url, capsys, store):
    store.register_physical("p1", {"host": "h"})
    ctl(capsys, "config", "n1", "asciisynth(5)", "null")
    ctl(capsys, "map", "p1", "n1")
    store.put_status("p1", {"host": "h", "updated": int(time.time() * 1000), "logical": {
        "n1": {"state": "ERROR", "version": 0, "last_error": "text: cannot open /x",
               "retry_at": int(time.time() * 1000) + 4000, "retries": 3}}})

    def row():
        out = ctl(capsys, "status", "n1")[1].splitlines()[1]
        return out if "ERROR" in out else None
    line = wait_until(row, 20, "the reported status")
    assert "text: cannot open /x (opened again in" in line and "retry 3)" in line
    code, out, _ = ctl(capsys, "status", "n1", "--json")
    assert json.loads(out)["logical"][0]["retries"] == 3
