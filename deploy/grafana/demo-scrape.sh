#!/usr/bin/env bash
# The dashboard picture from a real scrape, end to end:
#
#   deploy/grafana/demo-scrape.sh [OUT.png]        (default docs/dashboard.png)
#
# 1. `ringress demo` (release build; built when missing) on 127.0.0.1:18080/18443 with its
#    admin endpoint on 127.0.0.1:18000; the walkthrough's config gets a
#    RequestAuthentication (the sample key set, served by a local HTTP server) and an
#    AuthorizationPolicy, which the watcher reloads.
# 2. Debian's `prometheus` scraping /stats/prometheus every second (its own temporary
#    storage; installed with apt-get when missing, its service left stopped).
# 3. LOAD_SECONDS (default 150) of load: wrk on HTTP/1.1 keep-alive with a mix of
#    200/404/418/503 answers; a new TLS connection every 100 ms (HTTP/1.1 and h2, two
#    SNI names); tokens valid, tampered and missing; handshakes refused (no SNI, TLS 1.0);
#    SIGHUP reloads every 40 s and one reload that fails (a broken file, then restored).
# 4. deploy/grafana/render.py draws every panel of deploy/grafana/ringress.json from
#    that Prometheus into OUT.png; it exits non-zero when a panel shows no data.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
out="${1:-docs/dashboard.png}"
seconds="${LOAD_SECONDS:-150}"
http=18080 https=18443 admin=18000 prom=19090 jwks=19091

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

for tool in wrk curl openssl python3; do
    command -v "$tool" >/dev/null || { echo "demo-scrape.sh: $tool is missing" >&2; exit 1; }
done
if ! command -v prometheus >/dev/null; then
    say "installing prometheus (apt-get)"
    apt-get install -y -qq prometheus >/dev/null
    # The package starts its service where systemd runs; this run needs its own.
    systemctl stop prometheus 2>/dev/null || true
fi
python3 -c 'import matplotlib' 2>/dev/null ||
    python3 -m pip install -q --break-system-packages matplotlib
[ -x target/release/ringress ] || cargo build --release --locked

work="$(mktemp -d /tmp/ringress-dashboard.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The sample key set, served as a remote jwksUri.
mkdir -p "$work/jwks"
cp src/auth/testdata/jwks.json "$work/jwks/"
python3 -m http.server --bind 127.0.0.1 --directory "$work/jwks" "$jwks" >"$work/jwks.log" 2>&1 &
pids+=($!)

say "ringress demo"
target/release/ringress demo --dir "$work/demo" --http-port "$http" --https-port "$https" \
    --admin "127.0.0.1:$admin" --shards 2 >"$work/ringress.log" 2>&1 &
pids+=($!)
ringress_pid=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$admin/ready" >/dev/null || { cat "$work/ringress.log"; exit 1; }

cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: ringress
  metrics_path: /stats/prometheus
  static_configs:
  - targets: ["127.0.0.1:$admin"]
EOF
say "prometheus on 127.0.0.1:$prom"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom" >"$work/prometheus.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$prom/-/ready" >/dev/null && break
    sleep 0.2
done

config="$work/demo/gateway.yaml"
cat >>"$config" <<EOF
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: istio-system
spec:
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: http://127.0.0.1:$jwks/jwks.json
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt-for-headers
  namespace: istio-system
spec:
  action: DENY
  rules:
  - from:
    - source:
        notRequestPrincipals: ["*"]
    to:
    - operation:
        paths: ["/headers"]
EOF
good_config="$(cat "$config")"

cat >"$work/mix.lua" <<'EOF'
local paths = {"/status/200", "/status/200", "/status/200", "/status/200", "/status/200",
               "/status/200", "/status/404", "/status/418", "/status/503", "/nowhere"}
request = function()
    return wrk.format("GET", paths[math.random(#paths)])
end
EOF

start="$(date +%s)"
say "load for ${seconds}s"
wrk -t1 -c16 -d"${seconds}s" -s "$work/mix.lua" -H "Host: httpbin.example.com" \
    "http://127.0.0.1:$http/" >"$work/wrk.log" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")

token="$(tr -d '\n' <src/auth/testdata/demo.jwt)"
ca="$work/demo/ca-chain.pem"
tls() {
    local host="$1"
    shift
    curl -s -o /dev/null --resolve "$host:$https:127.0.0.1" --cacert "$ca" "$@" || true
}
tick=0
next_hup=40
broke=0
while kill -0 "$wrk_pid" 2>/dev/null; do
    elapsed=$(($(date +%s) - start))
    tls httpbin.example.com "https://httpbin.example.com:$https/status/200"
    tls bookinfo.com --http2 "https://bookinfo.com:$https/headers" -H "Authorization: Bearer $token"
    if ((tick % 3 == 0)); then
        tls bookinfo.com "https://bookinfo.com:$https/headers"
        tls bookinfo.com "https://bookinfo.com:$https/headers" -H "Authorization: Bearer ${token}x"
    fi
    if ((tick % 20 == 0)); then
        curl -sk -o /dev/null "https://127.0.0.1:$https/" || true
        openssl s_client -connect "127.0.0.1:$https" -servername httpbin.example.com -tls1 \
            </dev/null >/dev/null 2>&1 || true
    fi
    if ((elapsed >= next_hup)); then
        say "SIGHUP"
        kill -HUP "$ringress_pid"
        next_hup=$((next_hup + 40))
    fi
    if ((!broke && elapsed >= seconds * 2 / 3)); then
        broke=1
        say "a reload that fails, then the fix"
        printf 'kind: Gateway\nspec: [\n' >"$config"
        curl -s -o /dev/null -X POST "http://127.0.0.1:$admin/reload" || true
        sleep 2
        printf '%s\n' "$good_config" >"$config"
    fi
    tick=$((tick + 1))
    sleep 0.1
done
end="$(date +%s)"
grep -E "requests in|Socket errors|Non-2xx" "$work/wrk.log" || true
sleep 3 # the last scrape

say "rendering $out"
python3 deploy/grafana/render.py --prometheus "http://127.0.0.1:$prom" \
    --start "$start" --end "$end" --out "$out"
