-- specs/man_spec.lua — the man pages (man/modal.1, man/modal.7) against the program: every
-- command and every option that `modal --help` and `modal COMMAND --help` list is in modal(1),
-- every definition key and built-in input the validator knows is in modal(7), and both pages
-- render without a warning (groff -ww; mandoc -Tlint when it is installed).
local check = require "modal.check"

local BUILD = os.getenv("MODAL_BUILD") or "build"
local HOST = BUILD .. "/modal"

local read_file = require("support").read_file

-- Runs a shell command; returns its exit status, stdout and stderr.
-- Runs a tool with LD_PRELOAD unset: under make asan the sanitizer runtime is preloaded into
-- this process, and a tool that is not built with it (groff's C++ troff) must not inherit it.
local function run(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local _, _, status = os.execute(("env -u LD_PRELOAD %s >%s 2>%s </dev/null"):format(cmd, out, err))
  local stdout, stderr = read_file(out), read_file(err)
  os.remove(out); os.remove(err)
  return status, stdout, stderr
end

local function have(tool)
  return run("command -v " .. tool) == 0
end

-- A page's source with roff's escapes taken out: `\-\-watch` reads `--watch`, `\fBrun\fR`
-- reads `run`.
local function plain(src)
  return (src:gsub("\\f[BIRP]", ""):gsub("\\f%(%a%a", ""):gsub("\\%-", "-"):gsub("\\&", "")
    :gsub("\\c\n", ""))
end

-- The text of section `name` (.SH name) of a page's plain source.
local function section(text, name)
  local start = text:find("\n%.SH " .. name:gsub("%p", "%%%0") .. "\n")
  assert(start, "no section " .. name)
  local stop = text:find("\n%.SH ", start + 1) or #text
  return text:sub(start, stop)
end

-- The options a --help text lists: those at the start of an option line ("  -h, --help  ...")
-- and those in brackets ("[--format dot|mermaid]"), never examples in the prose (dot -Tpng).
local function options_in(help)
  local found, seen = {}, {}
  local function add(word)
    if not seen[word] then
      seen[word] = true
      found[#found + 1] = word
    end
  end
  for line in help:gmatch("[^\n]+") do
    local lead = line:match("^%s*(%-.-)%s%s") or line:match("^%s*(%-%S.*)$")
    if lead then
      for word in lead:gmatch("%f[%w%-]%-%-?%a[%w%-]*") do add(word) end
    end
    for bracket in line:gmatch("%[(.-)%]") do
      for word in bracket:gmatch("%f[%w%-]%-%-?%a[%w%-]*") do add(word) end
    end
  end
  return found
end

-- The commands `modal --help` lists under "commands:".
local function commands_in(help)
  local list = help:match("\ncommands:\n(.-)\n%a[%w ]*options:\n")
  assert(list, "no commands: list in modal --help")
  local found = {}
  for word in ("\n" .. list):gmatch("\n  (%l+)") do found[#found + 1] = word end
  return found
end

describe("man pages", function()
  local page1, page7, help
  setup(function()
    page1 = plain(read_file("man/modal.1"))
    page7 = plain(read_file("man/modal.7"))
    local status, out = run(HOST .. " --help")
    assert.equal(0, status)
    help = out
  end)

  describe("modal(1)", function()
    it("names every command of `modal --help` in its synopsis and its COMMANDS", function()
      local commands = commands_in(help)
      assert.same({ "run", "check", "graph", "test", "ctl" }, commands)
      local synopsis, listed = section(page1, "SYNOPSIS"), section(page1, "COMMANDS")
      for _, cmd in ipairs(commands) do
        assert.truthy(synopsis:find("\n.B modal " .. cmd .. "\n", 1, true), "synopsis: " .. cmd)
        assert.truthy(listed:find("\n.B " .. cmd .. " ", 1, true), "COMMANDS: " .. cmd)
      end
    end)

    it("describes every option `modal --help` lists", function()
      local options = options_in(help)
      for _, o in ipairs({ "--watch", "--admin", "--trace", "--log-level", "-h", "--help", "-V",
                           "--version", "--format", "--options", "--max-depth", "--steps" }) do
        assert.truthy(table.concat(options, " "):find(o, 1, true), "the parser missed " .. o)
      end
      local described = section(page1, "OPTIONS")
      for _, o in ipairs(options) do
        assert.truthy(described:find(o, 1, true), "modal(1) OPTIONS lacks " .. o)
      end
    end)

    for _, cmd in ipairs({ "run", "check", "graph", "test", "ctl" }) do
      it("describes every option `modal " .. cmd .. " --help` lists, and its exit status", function()
        local status, out = run(HOST .. " " .. cmd .. " --help")
        assert.equal(0, status)
        assert.truthy(out:find("usage: modal", 1, true), out)
        local described = section(page1, "OPTIONS")
        for _, o in ipairs(options_in(out)) do
          assert.truthy(described:find(o, 1, true), "modal(1) OPTIONS lacks " .. o .. " of " .. cmd)
        end
        assert.truthy(section(page1, "EXIT STATUS"):find("\n.SS " .. cmd .. "\n", 1, true),
          "EXIT STATUS lacks " .. cmd)
      end)
    end

    it("says what each signal does, environment variables and files", function()
      local signals = section(page1, "SIGNALS")
      for _, s in ipairs({ "SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE", "second", "128" }) do
        assert.truthy(signals:find(s, 1, true), "SIGNALS lacks " .. s)
      end
      local env = section(page1, "ENVIRONMENT")
      for _, v in ipairs({ "LUA_PATH", "LUA_CPATH" }) do
        assert.truthy(env:find(v, 1, true), "ENVIRONMENT lacks " .. v)
      end
      local files = section(page1, "FILES")
      for _, f in ipairs({ "PREFIX/bin/modal", "PREFIX/lib/lua/5.4/modal.so",
                           "PREFIX/share/lua/5.4/modal/", "man1/modal.1", "man7/modal.7" }) do
        assert.truthy(files:find(f, 1, true), "FILES lacks " .. f)
      end
    end)
  end)

  describe("modal(7)", function()
    it("names every definition key the validator knows, in bold", function()
      local bold = {}
      for line in page7:gmatch("[^\n]+") do
        if line:find("^%.BR? ") then
          for word in line:gmatch("[%w_]+") do bold[word] = true end
        end
      end
      for level, keys in pairs(check.KEYS) do
        for _, key in ipairs(keys) do
          assert.truthy(bold[key], "modal(7) lacks the " .. level .. " key " .. key)
        end
      end
    end)

    it("names the built-in inputs, reload and ignore", function()
      local inputs = section(page7, "BUILT-IN INPUTS")
      for _, input in ipairs(check.BUILTIN_INPUTS) do
        assert.truthy(inputs:find("\n.B " .. input .. "\n", 1, true), "input " .. input)
      end
      assert.truthy(inputs:find("\n.B reload\n", 1, true), "input reload")
      assert.truthy(inputs:find("ignore", 1, true), "ignore")
    end)

    it("points to doc/, and every page it names exists", function()
      for name in page7:gmatch("doc/[%w_]+%.md") do
        assert.truthy(io.open(name), "modal(7) names " .. name .. ", which does not exist")
      end
      for name in page1:gmatch("doc/[%w_]+%.md") do
        assert.truthy(io.open(name), "modal(1) names " .. name .. ", which does not exist")
      end
    end)
  end)

  for _, page in ipairs({ "man/modal.1", "man/modal.7" }) do
    describe(page, function()
      it("renders with groff -man -ww without a warning", function()
        if not have("groff") then return pending("groff is not installed (make deps)") end
        local status, _, err = run("groff -man -Tutf8 -ww -z " .. page)
        assert.equal(0, status)
        assert.equal("", err)
      end)

      it("passes mandoc -Tlint at level warning", function()
        if not have("mandoc") then return pending("mandoc is not installed (make deps)") end
        local status, out, err = run("mandoc -Tlint -W warning " .. page)
        assert.equal("", out .. err)
        assert.equal(0, status)
      end)

      it("is plain ASCII (no preconv needed)", function()
        assert.is_nil(read_file(page):find("[\128-\255]"))
      end)
    end)
  end
end)
