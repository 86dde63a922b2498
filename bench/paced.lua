-- wrk at a steady rate: every connection waits a random 0..2*PACE_MS milliseconds (PACE_MS on
-- average) after each answer before it sends the next request, so the rate is about
-- connections / (PACE_MS + latency) and the latency percentiles (in microseconds) are those of
-- an unsaturated server. Random pauses keep the connections from falling into step: with a
-- fixed pause they send in waves, and each wave queues behind itself.
local pause = tonumber(os.getenv("PACE_MS") or "1")

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function delay()
  return math.random(0, 2 * pause)
end
