-- wrk at a steady rate: every connection waits PACE_MS milliseconds after each answer before
-- it sends the next request, so the rate is about connections / (PACE_MS + latency) and the
-- latency percentiles (in microseconds) are those of an unsaturated server.
local pause = tonumber(os.getenv("PACE_MS") or "1")

function delay()
  return pause
end
