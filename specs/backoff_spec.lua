-- specs/backoff_spec.lua — modal.backoff (doc/policies.md, "Backoff"): gRPC's defaults, the
-- schedule, its cap, the jitter band, reset, and clear errors for bad options.
local modal = require "modal"

-- A random source that plays back a list (then repeats its last value).
local function playback(list)
  local i = 0
  return function()
    i = math.min(i + 1, #list)
    return list[i]
  end
end

describe("modal.backoff", function()
  describe("bad options (first)", function()
    it("names every bad option at once", function()
      local ok, err = pcall(modal.backoff, { initial = -1, multiplier = 0.5, jitter = 2, max = "x" })
      assert.is_false(ok)
      assert.matches("initial: expected a number of seconds >= 0, got -1", err, 1, true)
      assert.matches("multiplier: expected a number >= 1, got 0.5", err, 1, true)
      assert.matches("jitter: expected a number between 0 and 1, got 2", err, 1, true)
      assert.matches("max: expected a number of seconds >= 0, got string", err, 1, true)
    end)

    it("suggests the option meant by a misspelt one", function()
      local ok, err = pcall(modal.backoff, { jiter = 0.1 })
      assert.is_false(ok)
      assert.matches("jiter: unknown option (did you mean 'jitter'?)", err, 1, true)
    end)

    it("refuses NaN and infinities", function()
      assert.has_error(function() modal.backoff { initial = 0 / 0 } end)
      assert.has_error(function() modal.backoff { max = math.huge } end)
    end)

    it("refuses options that are not a table", function()
      local ok, err = pcall(modal.backoff, 5)
      assert.is_false(ok)
      assert.matches("expected a table of options, got number", err, 1, true)
    end)

    it("blames the caller's line", function()
      local ok, err = pcall(function() modal.backoff { initial = -1 } end)
      assert.is_false(ok)
      assert.matches("backoff_spec.lua:%d+: modal.backoff: initial", err)
    end)
  end)

  describe("the schedule", function()
    it("has gRPC's defaults: 1 s, x1.6, ±20 %, at most 120 s", function()
      local b = modal.backoff()
      assert.same({ 1, 1.6, 0.2, 120 }, { b.initial, b.multiplier, b.jitter, b.max })
    end)

    it("starts at initial and multiplies each step (no jitter)", function()
      local b = modal.backoff { initial = 1, multiplier = 2, jitter = 0, max = 100 }
      assert.same({ 1, 2, 4, 8, 16 }, { b:next(), b:next(), b:next(), b:next(), b:next() })
      assert.equal(5, b.count)
    end)

    it("caps the base delay at max", function()
      local b = modal.backoff { initial = 1, multiplier = 10, jitter = 0, max = 50 }
      assert.same({ 1, 10, 50, 50, 50 }, { b:next(), b:next(), b:next(), b:next(), b:next() })
    end)

    it("draws within ±jitter of the base, uniformly (a capped delay may exceed max)", function()
      local b = modal.backoff { initial = 10, multiplier = 1, jitter = 0.2, max = 10,
        random = playback { 0, 0.5, 0.999999 } }
      assert.near(8, b:next(), 1e-9)
      assert.near(10, b:next(), 1e-9)
      assert.near(12, b:next(), 1e-4)       -- above max: the jitter of a capped delay
    end)

    it("spreads many draws over the whole band, about evenly", function()
      local b = modal.backoff { initial = 1, multiplier = 1, jitter = 0.5 }
      local buckets = { 0, 0, 0, 0, 0 }
      for _ = 1, 5000 do
        local d = b:next()
        assert.is_true(d >= 0.5 and d <= 1.5)
        local k = math.min(5, math.floor((d - 0.5) / 0.2) + 1)
        buckets[k] = buckets[k] + 1
      end
      for _, n in ipairs(buckets) do assert.is_true(n > 700 and n < 1300, tostring(n)) end
    end)

    it("reset() starts again from initial", function()
      local b = modal.backoff { initial = 2, multiplier = 3, jitter = 0 }
      b:next(); b:next(); b:next()
      b:reset()
      assert.equal(0, b.count)
      assert.equal(2, b:next())
    end)

    it("peek() gives the next base delay without moving", function()
      local b = modal.backoff { initial = 1, multiplier = 2, jitter = 0.2 }
      assert.equal(1, b:peek())
      b:next()
      assert.equal(2, b:peek())
      assert.equal(2, b:peek())
    end)

    it("takes initial = 0 (retry at once) and never returns a negative delay", function()
      local b = modal.backoff { initial = 0, multiplier = 2, jitter = 1 }
      for _ = 1, 10 do assert.equal(0, b:next()) end
      local c = modal.backoff { initial = 1, multiplier = 1, jitter = 1, random = playback { 0 } }
      assert.equal(0, c:next())
    end)

    it("is reachable as require 'modal.backoff' too, and prints its state", function()
      local b = require("modal.backoff") { initial = 3 }
      assert.matches("modal.backoff(initial=3, multiplier=1.6, jitter=0.2, max=120, count=0)",
        tostring(b), 1, true)
    end)
  end)
end)
