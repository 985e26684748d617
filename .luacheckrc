-- .luacheckrc — luacheck settings for modal's Lua half, specs, examples and benchmarks.
std = "lua54"
max_line_length = 110
files["specs/**"] = { std = "+busted" }
exclude_files = { "build/**", "build-asan/**", "build-fuzz/**" }
