-- wrk script for perf/compare.sh's `latency` workload: a fixed offered request rate,
-- and latency measured from each request's scheduled send time.
--
--   wrk -t1 -c64 -d10s -s perf/wrk-rate.lua URL -- RATE SKIP_MS
--
-- RATE is the offered load in requests/s for the whole run (wrk must run one thread);
-- answers that arrive in the first SKIP_MS milliseconds (connection set-up: one TLS
-- handshake per connection) are not recorded. A request due in that time but answered
-- later is: when the gateway falls behind the schedule, the queue it builds counts.
--
-- Schedule. Slot k is due at start + k / RATE. A connection that becomes free (after
-- connecting, or after its previous response) asks delay() how long to wait: it claims
-- the next unclaimed slot and waits for it. While at least one connection is free, the
-- offered rate is RATE whatever the gateway's latency (open loop). When all are busy,
-- the overdue slots are sent as soon as a connection frees up, and the time they waited
-- counts in their latency (no coordinated omission hidden by a closed loop).
--
-- Where latency is measured from. wrk's timers tick in whole milliseconds (each slot's
-- due time is rounded up to a millisecond boundary of the wall clock, gettimeofday, the
-- clock of wrk's timers) and fire anywhere up to about 1 ms after it. That lateness is
-- wrk's, not the gateway's: when a connection was free and waiting for its slot, the
-- request's latency counts from its actual send. When the slot was claimed after it
-- was due (every connection was busy waiting for the gateway), the latency counts from
-- the due time, so the time the request could not be sent is charged to the gateway
-- (the coordinated omission of a closed loop is not hidden). The price of the
-- millisecond ticks: the requests of one millisecond leave together, in a burst of
-- about RATE/1000.
--
-- Identity. wrk's Lua API does not say which connection a request() or response()
-- belongs to. Each request carries its start time (above) in an `X-Sched` header,
-- which the upstream (location /lat of compare.sh's upstream nginx) copies into the
-- response; response() computes now - start from it. Which slot request() takes: the
-- earliest claimed one not yet sent; every claimed slot up to the one of the
-- connection that is sending is already due, so a request never starts in the future.
--
-- Connects to WRK_CONNECT_ADDR (default 127.0.0.1) whatever host the URL names, like
-- perf/wrk-report.lua. Prints one line at the end that compare.sh parses:
--   RINGRESS_PERF requests=N duration_us=N connect_err=N read_err=N write_err=N
--     status_err=N timeout_err=N p50_us=N p99_us=N p999_us=N max_us=N recorded=N
--     target_rps=N achieved_rps=N wrk_p50_us=N wrk_p99_us=N unmatched=N late=N
-- p50/p99/p999/max are from the start time above, over the recorded responses;
-- achieved_rps = recorded responses per second from the end of SKIP_MS to the last one; wrk_p50/wrk_p99 are wrk's own
-- figures (from the actual send, all responses); unmatched = responses without a
-- usable X-Sched header (each is also left out of the percentiles); late = requests
-- sent after waiting for a free connection (all requests, including the skipped start).

local ffi = require("ffi")
ffi.cdef [[
   typedef struct { long tv_sec; long tv_usec; } ringress_timeval;
   int gettimeofday(ringress_timeval *tv, void *tz);
]]

local tv = ffi.new("ringress_timeval")

-- Wall-clock microseconds, the clock wrk's timers use.
local function now_us()
   ffi.C.gettimeofday(tv, nil)
   return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec)
end

local connect_addr = os.getenv("WRK_CONNECT_ADDR") or "127.0.0.1"

wrk.resolve = function(host, service)
   wrk.addrs = wrk.lookup(connect_addr, service)
end

-- Main state: the threads, to read their histograms in done().
local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
end

-- Thread state.
local interval_us = 1000000 / 1000
local skip_us = 0
local start = nil
local slot = 0
local pending = {}        -- claimed due times not yet sent (FIFO)
local pending_late = {}   -- whether each was claimed after its due time
local head, tail = 1, 0
local req_prefix, req_suffix

-- Globals read by done() through thread:get().
hist = {}                 -- latency in µs (from the start time) -> count
recorded = 0
unmatched = 0
late = 0                  -- requests sent after waiting for a free connection
rec_from = 0              -- wall-clock µs from which answers are recorded
last_done = 0             -- wall-clock µs of the last recorded response
target_rps = 0

function init(args)
   local rate = tonumber(args[1])
   if rate == nil or rate <= 0 then
      error("perf/wrk-rate.lua: pass the rate after --, e.g. -- 20000 500")
   end
   target_rps = rate
   interval_us = 1000000 / rate
   skip_us = (tonumber(args[2]) or 0) * 1000
   -- The same request as wrk.format() builds, plus the due time.
   local path = wrk.path
   local host = wrk.headers["Host"] or wrk.host
   req_prefix = wrk.method .. " " .. path .. " HTTP/1.1\r\nHost: " .. host .. "\r\nX-Sched: "
   req_suffix = "\r\n\r\n"
end

function delay()
   local now = now_us()
   if start == nil then
      start = now
      rec_from = start + skip_us
   end
   local s = start + slot * interval_us
   slot = slot + 1
   -- Round up to wrk's next millisecond tick; wrk's timer counts from the current
   -- millisecond (it drops the microseconds of "now").
   local due = math.ceil(s / 1000) * 1000
   tail = tail + 1
   pending[tail] = due
   -- Claimed after it was due: no connection was free in time.
   pending_late[tail] = now > due
   local base = now - now % 1000
   if due <= base then
      return 0
   end
   return (due - base) / 1000
end

function request()
   local now = now_us()
   local from = now
   if head <= tail then
      local due, was_late = pending[head], pending_late[head]
      pending[head] = nil
      pending_late[head] = nil
      head = head + 1
      -- Only after a reconnect (no delay() before it) can this be another
      -- connection's future slot.
      if was_late and due < now then
         from = due
         late = late + 1
      end
   end
   return req_prefix .. string.format("%d", from) .. req_suffix
end

function response(status, headers, body)
   local v = headers["X-Sched"] or headers["x-sched"]
   local from = v and tonumber(v)
   if from == nil then
      unmatched = unmatched + 1
      return
   end
   local now = now_us()
   if start == nil or now < rec_from then
      return
   end
   local lat = now - from
   hist[lat] = (hist[lat] or 0) + 1
   recorded = recorded + 1
   last_done = now
end

-- q-th percentile (0..100) of a histogram given as sorted keys and counts.
local function percentile(keys, counts, total, q)
   if total == 0 then
      return 0
   end
   local want = math.ceil(total * q / 100)
   if want < 1 then
      want = 1
   end
   local seen = 0
   for _, k in ipairs(keys) do
      seen = seen + counts[k]
      if seen >= want then
         return k
      end
   end
   return keys[#keys]
end

function done(summary, latency, requests)
   local counts, total, unmatched_all, target, late_all = {}, 0, 0, 0, 0
   local lo, hi = nil, nil
   for _, t in ipairs(threads) do
      local h = t:get("hist") or {}
      for k, n in pairs(h) do
         counts[k] = (counts[k] or 0) + n
      end
      total = total + (t:get("recorded") or 0)
      unmatched_all = unmatched_all + (t:get("unmatched") or 0)
      late_all = late_all + (t:get("late") or 0)
      target = target + (t:get("target_rps") or 0)
      local f, l = t:get("rec_from") or 0, t:get("last_done") or 0
      if f > 0 and (lo == nil or f < lo) then
         lo = f
      end
      if l > 0 and (hi == nil or l > hi) then
         hi = l
      end
   end
   local keys = {}
   for k in pairs(counts) do
      keys[#keys + 1] = k
   end
   table.sort(keys)
   local achieved = 0
   if lo ~= nil and hi ~= nil and hi > lo then
      -- Responses recorded per second of wall clock, from the end of the skipped
      -- start to the last recorded response: a gateway that falls behind the
      -- schedule answers fewer than the target.
      achieved = math.floor(total / ((hi - lo) / 1e6) + 0.5)
   end
   local e = summary.errors
   io.write(string.format(
      "RINGRESS_PERF requests=%d duration_us=%d connect_err=%d read_err=%d write_err=%d status_err=%d timeout_err=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d recorded=%d target_rps=%d achieved_rps=%d wrk_p50_us=%d wrk_p99_us=%d unmatched=%d late=%d\n",
      summary.requests, summary.duration,
      e.connect, e.read, e.write, e.status, e.timeout,
      percentile(keys, counts, total, 50), percentile(keys, counts, total, 99),
      percentile(keys, counts, total, 99.9), keys[#keys] or 0,
      total, target, achieved,
      latency:percentile(50), latency:percentile(99), unmatched_all, late_all))
end
