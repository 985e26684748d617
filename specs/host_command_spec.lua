-- specs/host_command_spec.lua — the admin socket's requests run in-process (modal.host's
-- command, doc/host.md): a failed reload's reply names the definition's file, whatever
-- modal.reload's message says.
local modal = require "modal"
local host = require "modal.host"
local support = require "support"

describe("an admin request", function()
  local dir
  setup(function() dir = support.tmpdir("host_command") end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
  local write = support.write_file

  it("reload NAME that fails names the file in its reply", function()
    local path = dir .. "/renamed.lua"
    write(path, 'return { name = "hc_renamed", initial = "a", methods = {}, states = { a = {} } }\n')
    modal.load(path)
    write(path, 'return { name = "hc_other", initial = "a", methods = {}, states = { a = {} } }\n')
    support.capture_log()                  -- modal.reload logs the failure: kept quiet
    local reply = host.command("reload hc_renamed")
    support.run_undo()
    assert.is_false(reply.ok)
    assert.equal(1, reply.error:find(path .. ": ", 1, true), reply.error)
    assert.truthy(reply.error:find("hc_other", 1, true), reply.error)
  end)
end)
