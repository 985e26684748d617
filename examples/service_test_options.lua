-- examples/service_test_options.lua — `modal test --options` for the examples' services
-- (doc/testing.md, "modal test"): the connect job's failures to try, so the path search
-- reaches both branches of `connecting`'s error — classify's "fatal" (a refused secret, kind
-- auth) and its "retry" (a refused connection).
local modal = require "modal"

return {
  args = {
    error = {
      { modal.failure("auth", "the server refused the secret") },
      { modal.failure("refused", "connect: ECONNREFUSED") },
    },
  },
}
