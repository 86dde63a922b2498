-- wrk: POST with an empty body to the metered /process route, for a new patient each time:
-- like a real /process, every reply hands out a new task id, whose owner the gate records.
-- (The same path over and over would find its owner already known and write nothing.)
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/process/p" .. n .. "/20250101", nil, "")
end
