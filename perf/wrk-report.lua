-- wrk script for perf/compare.sh.
--
-- 1. Connects to WRK_CONNECT_ADDR (default 127.0.0.1) whatever host the URL names, so the
--    URL can carry the TLS server name (SNI and Host: bench.example.com) without an
--    /etc/hosts entry.
-- 2. Adds no per-request Lua work (no request/response functions), so wrk's own cost
--    stays that of a static request.
-- 3. Prints one machine-readable line at the end that compare.sh parses:
--    RINGRESS_PERF requests=N duration_us=N bytes=N connect_err=N read_err=N
--                  write_err=N status_err=N timeout_err=N p50_us=N p99_us=N

local connect_addr = os.getenv("WRK_CONNECT_ADDR") or "127.0.0.1"

wrk.resolve = function(host, service)
   wrk.addrs = wrk.lookup(connect_addr, service)
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RINGRESS_PERF requests=%d duration_us=%d bytes=%d connect_err=%d read_err=%d write_err=%d status_err=%d timeout_err=%d p50_us=%d p99_us=%d\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
