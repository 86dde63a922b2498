-- wrk: POST with an empty body (the metered /process route takes no body).
wrk.method = "POST"
wrk.body = ""
