-- ngs_driver: moves the player one discrete step per command, for the neural game simulator.
--
-- The client's own physics depends on frame timing, so key presses do not replay. This mod zeroes
-- the player's physics and moves the player itself, one step per command, from the server. Python
-- (games/minetest/env.py) writes a command line to WORLD/ngs/cmd (to a temp name, then renamed)
-- and reads the answer from WORLD/ngs/ack (written the same way), a JSON object with the command's
-- sequence number.
--
-- Commands ("SEQ VERB ARGS"):
--   SEQ spawn KIND X Z YAW_STEPS L    undo every node this mod changed, find the nearest start
--                                     point of KIND (grassland, forest, desert, water, cave, any)
--                                     from (X, Z), load the blocks around it, stand there facing
--                                     YAW_STEPS * 15 degrees
--   SEQ act NAME L                    one action (see ACTIONS)
--   SEQ quit                          shut the game down
-- L > 0 asks for an L x L per-pixel label map of the new view (a raycast per pixel centre),
-- written to WORLD/ngs/labels after the answer, with the same sequence number.

local STEP = 0.5                    -- nodes per move
local TURN = 15                     -- degrees per turn or tilt
local MAX_PITCH = 6                 -- tilt steps (90 degrees)
local CHUNK = 16 * tonumber(minetest.settings:get("chunksize") or "5")  -- map chunk side, nodes
local REACH = 5                     -- dig/place reach in nodes
local PLACE_NODE = "default:wood"   -- what "place" puts down
local RANGE = tonumber(minetest.settings:get("viewing_range") or "48")
local FOV = tonumber(minetest.settings:get("fov") or "72")
-- The view the client draws is wider than its fov setting: Minetest's camera widens the vertical
-- field of view of a window narrower than 16:10 by sqrt(1.6 / aspect), at most 1.4 times
-- (src/client/camera.cpp), so a square window at fov 72 shows 91 degrees. The label map's rays
-- span that view (games/minetest/geometry.py render_fov, the same rule).
local ASPECT = (tonumber(minetest.settings:get("screen_w") or "1") or 1)
	/ (tonumber(minetest.settings:get("screen_h") or "1") or 1)
local TAN_Y = math.tan(math.rad(FOV * math.max(1, math.min(1.4, math.sqrt(1.6 / ASPECT)))) / 2)
local TAN_X = ASPECT * TAN_Y

-- A static world: no active block modifiers (grass spreading, leaf decay, growth: random and
-- timed, so they would differ between runs) and no loading-block modifiers.
local function freeze()
	for i = #minetest.registered_abms, 1, -1 do minetest.registered_abms[i] = nil end
	for i = #minetest.registered_lbms, 1, -1 do minetest.registered_lbms[i] = nil end
end
freeze()
minetest.register_on_mods_loaded(freeze)

-- Still textures: an animated tile (water, lava) would show whichever frame the client's clock
-- has reached, different every run. Each keeps its first frame (for 10^6 s).
local function still(tiles)
	if type(tiles) ~= "table" then return nil end
	local out, changed = {}, false
	for i, t in ipairs(tiles) do
		if type(t) == "table" and t.animation then
			local c = table.copy(t)
			c.animation = table.copy(t.animation)
			c.animation.length = 1e6
			out[i], changed = c, true
		else
			out[i] = t
		end
	end
	return changed and out or nil
end

minetest.register_on_mods_loaded(function()
	for name, def in pairs(minetest.registered_nodes) do
		local tiles, special = still(def.tiles), still(def.special_tiles)
		if tiles or special then
			minetest.override_item(name, {tiles = tiles or def.tiles, special_tiles = special or def.special_tiles})
		end
	end
end)

-- A map generated the same every run. The engine places a schematic's nodes of probability
-- below "always" with an unseeded random draw, so a tree's leaves and apples differed between
-- runs: every decoration is registered again (in a fixed order) with each probability made
-- "always" (>= 128) or "never". Fireflies and butterflies (timed, random) and the Lua mapgen
-- callbacks (dungeon chests, those insects' timers) are left out.
local function fixed_schematic(schem)
	local t = minetest.read_schematic(schem, {write_yslice_prob = "all"})
	if not t then return schem end
	for _, n in ipairs(t.data) do
		n.prob = (n.prob or 255) >= 128 and 255 or 0
	end
	for _, y in ipairs(t.yslice_prob or {}) do
		y.prob = (y.prob or 255) >= 128 and 255 or 0
	end
	return t
end

local function insect(name)
	return type(name) == "string" and (name:find("^butterflies:") or name:find("^fireflies:")) ~= nil
end

minetest.register_on_mods_loaded(function()
	local keys, defs = {}, {}
	for k, d in pairs(minetest.registered_decorations) do
		keys[#keys + 1] = tostring(k)
		defs[tostring(k)] = d
	end
	table.sort(keys)
	minetest.clear_registered_decorations()
	for _, k in ipairs(keys) do
		local def = table.copy(defs[k])
		local keep = not insect(def.decoration)
		if type(def.decoration) == "table" then
			local names = {}
			for _, n in ipairs(def.decoration) do
				if not insect(n) then names[#names + 1] = n end
			end
			def.decoration, keep = names, #names > 0
		end
		if def.schematic then def.schematic = fixed_schematic(def.schematic) end
		if keep then minetest.register_decoration(def) end
	end
	for i = #minetest.registered_on_generateds, 1, -1 do minetest.registered_on_generateds[i] = nil end
end)

-- Nothing but the world on screen: no status line, join or chat messages.
minetest.get_server_status = function() return "" end
minetest.send_join_message = function() end
minetest.send_leave_message = function() end
minetest.chat_send_all = function() end
minetest.chat_send_player = function() end

local dir = minetest.get_worldpath() .. "/ngs"
minetest.mkdir(dir)
local CMD, ACK, LABELS = dir .. "/cmd", dir .. "/ack", dir .. "/labels"

local emerge_around
local state = {seq = -1, yaw = 0, pitch = 0, edits = {}, edit_order = {}, busy = false}

local function write_json(path, t)  -- to a temporary name, then renamed: never read half-written
	local tmp = path .. ".tmp"
	local f = io.open(tmp, "w")
	f:write(minetest.write_json(t))
	f:close()
	os.rename(tmp, path)
end

local function write_ack(t) write_json(ACK, t) end

local function player()
	return minetest.get_connected_players()[1]
end

local function walkable(pos)
	local node = minetest.get_node(pos)
	if node.name == "ignore" then return true end
	local def = minetest.registered_nodes[node.name]
	return def == nil or def.walkable
end

local function apply_look(p)
	p:set_look_horizontal(math.rad(state.yaw * TURN))
	p:set_look_vertical(math.rad(state.pitch * TURN))
end

local function body_free(pos)  -- the feet and head nodes of a player standing at pos
	local f = vector.round(pos)
	return not walkable(f) and not walkable(vector.offset(f, 0, 1, 0))
end

local function on_ground(pos)
	return walkable(vector.round(vector.offset(pos, 0, -0.51, 0)))
end

-- The nodes around the player (7 x 5 x 7) as one hash: what the world is, not how it looks.
local function node_hash(pos)
	local c = vector.round(pos)
	local parts = {}
	for x = c.x - 3, c.x + 3 do
		for y = c.y - 2, c.y + 2 do
			for z = c.z - 3, c.z + 3 do
				parts[#parts + 1] = minetest.get_node({x = x, y = y, z = z}).name
			end
		end
	end
	return minetest.sha1(table.concat(parts, ","))
end

local function eye(p)
	local pos = p:get_pos()
	return vector.offset(pos, 0, p:get_properties().eye_height or 1.625, 0)
end

local function look_basis()
	local yaw, pitch = math.rad(state.yaw * TURN), math.rad(state.pitch * TURN)
	local fwd = {x = -math.sin(yaw) * math.cos(pitch), y = -math.sin(pitch), z = math.cos(yaw) * math.cos(pitch)}
	local right = {x = math.cos(yaw), y = 0, z = math.sin(yaw)}
	local up = {x = -math.sin(yaw) * math.sin(pitch), y = math.cos(pitch), z = math.cos(yaw) * math.sin(pitch)}
	return fwd, right, up
end

local function first_node(from, to)
	for pt in minetest.raycast(from, to, false, true) do
		if pt.type == "node" then return pt end
	end
	return nil
end

-- An L x L map of the first node each pixel centre's ray hits ("air" past the viewing range),
-- as indices (one character each, 33 + index, row by row from the top) into a list of names.
local function label_map(p, L)
	local e = eye(p)
	local fwd, right, up = look_basis()
	local tx, ty = TAN_X, TAN_Y
	local names, index, out = {"air"}, {air = 0}, {}
	for row = 0, L - 1 do
		local v = 1 - (2 * row + 1) / L
		for col = 0, L - 1 do
			local u = (2 * col + 1) / L - 1
			local d = vector.normalize({x = fwd.x + tx * u * right.x + ty * v * up.x,
				y = fwd.y + tx * u * right.y + ty * v * up.y,
				z = fwd.z + tx * u * right.z + ty * v * up.z})
			local pt = first_node(e, vector.add(e, vector.multiply(d, RANGE)))
			local name = pt and minetest.get_node(pt.under).name or "air"
			local i = index[name]
			if i == nil then
				i = #names
				names[i + 1] = name
				index[name] = i
			end
			out[#out + 1] = string.char(33 + math.min(i, 90))
		end
	end
	return {names = names, ids = table.concat(out), size = L}
end

local function remember(pos)  -- the node at pos before this mod first changed it
	local key = minetest.pos_to_string(pos)
	if state.edits[key] == nil then
		state.edits[key] = minetest.get_node(pos)
		state.edit_order[#state.edit_order + 1] = vector.new(pos)
	end
end

local function fall(p)  -- discrete gravity: one node a step while nothing is below the feet
	local pos = p:get_pos()
	if not on_ground(pos) then
		p:set_pos(vector.offset(pos, 0, -1, 0))
		return true
	end
	return false
end

local function move(p, dx, dz)  -- one step along (dx, dz), climbing one node where it must
	local pos = p:get_pos()
	local to = {x = pos.x + STEP * dx, y = pos.y, z = pos.z + STEP * dz}
	local edge = {x = to.x + 0.3 * dx, y = to.y, z = to.z + 0.3 * dz}  -- the body's front
	if body_free(to) and body_free(edge) then
		p:set_pos(to)
		return true
	end
	local up_to, up_edge = vector.offset(to, 0, 1, 0), vector.offset(edge, 0, 1, 0)
	if on_ground(pos) and body_free(vector.offset(pos, 0, 1, 0)) and body_free(up_to) and body_free(up_edge) then
		p:set_pos(up_to)
		return true
	end
	return false
end

local ACTIONS = {}
local function horizontal(sign_fwd, sign_side)
	return function(p)
		local yaw = math.rad(state.yaw * TURN)
		local fx, fz = -math.sin(yaw), math.cos(yaw)
		local rx, rz = math.cos(yaw), math.sin(yaw)
		return move(p, sign_fwd * fx + sign_side * rx, sign_fwd * fz + sign_side * rz)
	end
end
ACTIONS.noop = function(p) return false end
ACTIONS.forward = horizontal(1, 0)
ACTIONS.back = horizontal(-1, 0)
ACTIONS.left = horizontal(0, -1)
ACTIONS.right = horizontal(0, 1)
ACTIONS.turn_left = function(p) state.yaw = (state.yaw + 1) % (360 / TURN); apply_look(p); return true end
ACTIONS.turn_right = function(p) state.yaw = (state.yaw - 1) % (360 / TURN); apply_look(p); return true end
ACTIONS.look_up = function(p)
	if state.pitch <= -MAX_PITCH then return false end
	state.pitch = state.pitch - 1; apply_look(p); return true
end
ACTIONS.look_down = function(p)
	if state.pitch >= MAX_PITCH then return false end
	state.pitch = state.pitch + 1; apply_look(p); return true
end
ACTIONS.jump = function(p)
	local pos = p:get_pos()
	if on_ground(pos) and body_free(vector.offset(pos, 0, 1, 0)) then
		p:set_pos(vector.offset(pos, 0, 1, 0))
		return true, true  -- moved, and no gravity this step
	end
	return false
end
local function pointed(p)  -- the node the eye points at within reach (nil: none)
	local e = eye(p)
	local fwd = look_basis()
	return first_node(e, vector.add(e, vector.multiply(fwd, REACH)))
end
ACTIONS.dig = function(p)
	local pt = pointed(p)
	if pt == nil then return false end
	local def = minetest.registered_nodes[minetest.get_node(pt.under).name]
	if def and def.liquidtype ~= "none" then return false end  -- water is not dug
	remember(pt.under)
	minetest.remove_node(pt.under)
	return true
end
ACTIONS.place = function(p)
	local pt = pointed(p)
	if pt == nil then return false end
	local at = pt.above
	local feet = vector.round(p:get_pos())
	if vector.equals(at, feet) or vector.equals(at, vector.offset(feet, 0, 1, 0)) then return false end
	local cur = minetest.registered_nodes[minetest.get_node(at).name]
	if cur and not cur.buildable_to then return false end
	remember(at)
	minetest.set_node(at, {name = PLACE_NODE})
	return true
end

local function answer(seq, p, changed, L, extra)
	local pos = p:get_pos()
	local t = {seq = seq, pos = {pos.x, pos.y, pos.z}, yaw = state.yaw * TURN, pitch = state.pitch * TURN,
		changed = changed, hash = node_hash(pos)}
	if extra then for k, v in pairs(extra) do t[k] = v end end
	write_ack(t)
	-- The label map after the answer: the client draws the new view while the rays are cast.
	if L and L > 0 then
		local labels = label_map(p, L)
		labels.seq = seq
		write_json(LABELS, labels)
	end
end

local function canopy(name)  -- tree tops are not ground to start on
	return minetest.get_item_group(name, "leaves") > 0 or minetest.get_item_group(name, "tree") > 0
end

local function ground_height(x, z, top, bottom)
	for y = top, bottom, -1 do
		local pos = {x = x, y = y, z = z}
		local name = minetest.get_node(pos).name
		if walkable(pos) and name ~= "ignore" and not canopy(name) and body_free(vector.offset(pos, 0, 1, 0)) then
			return y
		end
	end
	return nil
end

-- Spawn kinds: the biomes (at ground level) each kind of start point stands in.
local KINDS = {
	grassland = {grassland = true, savanna = true, snowy_grassland = true},
	forest = {deciduous_forest = true, coniferous_forest = true, rainforest = true, taiga = true},
	desert = {desert = true, sandstone_desert = true, cold_desert = true},
	water = {grassland_dunes = true, coniferous_forest_dunes = true, deciduous_forest_shore = true,
		savanna_shore = true, rainforest_swamp = true, tundra_beach = true},
}

local function biome_at(x, y, z)
	local data = minetest.get_biome_data({x = x, y = y, z = z})
	return data and minetest.get_biome_name(data.biome) or "?"
end

-- The first point of a square spiral (step 24 nodes) from (x0, z0) whose ground is of `kind`
-- (from the map generator's noise: no blocks need to exist yet), as x, y, z.
local function find_point(kind, x0, z0)
	local want = KINDS[kind]
	local x, z, dx, dz, leg, walked, turns = 0, 0, 1, 0, 1, 0, 0
	for _ = 1, 40000 do
		local px, pz = x0 + 24 * x, z0 + 24 * z
		local y = minetest.get_spawn_level(px, pz)
		if y and (want == nil or want[biome_at(px, y, pz)]) then return px, y, pz end
		x, z, walked = x + dx, z + dz, walked + 1
		if walked == leg then
			walked, dx, dz, turns = 0, -dz, dx, turns + 1
			if turns % 2 == 0 then leg = leg + 1 end
		end
	end
	return x0, minetest.get_spawn_level(x0, z0) or 10, z0
end

-- A cave floor near (x, z), below the ground at height top: an air node with air above, solid
-- below and solid somewhere overhead (a roof), on a 2-node grid within 40 nodes; nil if none.
local function find_cave(x, z, top)
	for y = top - 8, top - 44, -1 do
		for dx = -40, 40, 2 do
			for dz = -40, 40, 2 do
				local f = {x = x + dx, y = y, z = z + dz}
				if body_free(f) and walkable(vector.offset(f, 0, -1, 0)) then
					for h = 2, 6 do
						if walkable(vector.offset(f, 0, h, 0)) then return f end
					end
				end
			end
		end
	end
	return nil
end

-- The map is generated only here, around the player, in one fixed order (one emerge thread; the
-- client generates at most the block it stands in: max_block_generate_distance 0), so
-- that every run generates the same map: a chunk generated later can change its neighbours'
-- borders (trees, caves), so the order matters. `done` runs once everything is there.
emerge_around = function(pos, done)
	state.busy = true
	local r = RANGE
	local lo = {x = pos.x - r, y = pos.y - 48, z = pos.z - r}
	local hi = {x = pos.x + r, y = pos.y + 48, z = pos.z + r}
	-- One map chunk (CHUNK nodes a side, from -32) at a time, each after the last, then the area.
	local chunks = {}
	local function chunk_of(v) return math.floor((v + 32) / CHUNK) end
	for cx = chunk_of(lo.x), chunk_of(hi.x) do
		for cy = chunk_of(lo.y), chunk_of(hi.y) do
			for cz = chunk_of(lo.z), chunk_of(hi.z) do
				local c = {x = cx * CHUNK - 32 + 8, y = cy * CHUNK - 32 + 8, z = cz * CHUNK - 32 + 8}
				chunks[#chunks + 1] = c
			end
		end
	end
	local i = 0
	local function next_chunk()
		i = i + 1
		if i > #chunks then
			minetest.emerge_area(lo, hi, function(_, _, remaining)
				if remaining > 0 then return end
				state.busy = false
				done()
			end)
			return
		end
		minetest.emerge_area(chunks[i], chunks[i], function(_, _, remaining)
			if remaining == 0 then next_chunk() end
		end)
	end
	next_chunk()
end

local function spawn(seq, p, kind, x0, z0, yaw, L)
	for i = #state.edit_order, 1, -1 do  -- undo this mod's digs and places, newest first
		local pos = state.edit_order[i]
		minetest.set_node(pos, state.edits[minetest.pos_to_string(pos)])
	end
	state.edits, state.edit_order = {}, {}
	local x, y, z = find_point(kind ~= "cave" and kind or "any", x0, z0)
	emerge_around({x = x, y = y, z = z}, function()
			local g = ground_height(x, z, y + 32, y - 48) or y
			local feet = {x = x, y = g + 0.5, z = z}
			if kind == "cave" then
				local c = find_cave(x, z, g)
				if c then feet = {x = c.x, y = c.y - 0.5, z = c.z} end
			end
			state.yaw, state.pitch = yaw % (360 / TURN), 0
			state.block = vector.floor(vector.divide(feet, 16))
			emerge_around(feet, function()
				p:set_pos(feet)
				apply_look(p)
				answer(seq, p, true, L, {kind = kind, biome = biome_at(feet.x, feet.y, feet.z),
					found = {x, y, z}, ground = g, cave = kind == "cave" and feet.y < g})
			end)
		end)
end

local function setup(p)
	p:set_physics_override({speed = 0, jump = 0, gravity = 0, sneak = false})
	p:hud_set_flags({hotbar = false, healthbar = false, crosshair = false, wielditem = false,
		breathbar = false, minimap = false, minimap_radar = false})
	p:set_properties({visual_size = {x = 0, y = 0}, makes_footstep_sound = false})
	p:set_clouds({density = 0})
	-- A plain sky of one colour: the regular sky's brightness follows the view with a per-frame
	-- moving average on the client, so it depended on the frame rate, not only on the view.
	p:set_sky({type = "plain", base_color = "#8cbdf5", clouds = false})
	p:set_sun({visible = false, sunrise_visible = false})
	p:set_moon({visible = false})
	p:set_stars({visible = false})
	minetest.set_timeofday(0.5)
end

minetest.register_on_joinplayer(function(p)
	setup(p)
	minetest.after(0.5, function() write_ack({seq = -1, ready = true}) end)
end)

minetest.register_globalstep(function()
	if state.busy then return end
	local f = io.open(CMD, "r")
	if not f then return end
	local line = f:read("*l")
	f:close()
	if not line then return end
	local words = line:split(" ")
	local seq = tonumber(words[1])
	if not seq or seq <= state.seq then return end
	local p = player()
	if not p then return end
	state.seq = seq
	local verb = words[2]
	local ok, err = pcall(function()
		if verb == "act" then
			local act = ACTIONS[words[3]]
			if act == nil then
				write_ack({seq = seq, error = "unknown action " .. tostring(words[3])})
				return
			end
			local moved, hold = act(p)
			if not hold and fall(p) then moved = true end
			local L = tonumber(words[4])
			local block = vector.floor(vector.divide(p:get_pos(), 16))
			if state.block and vector.equals(block, state.block) then
				answer(seq, p, moved and true or false, L)
			else  -- a new block: generate what the view can reach first, in a fixed order
				state.block = block
				emerge_around(p:get_pos(), function() answer(seq, p, moved and true or false, L) end)
			end
		elseif verb == "spawn" then
			spawn(seq, p, words[3], tonumber(words[4]), tonumber(words[5]), tonumber(words[6]) or 0,
				tonumber(words[7]))
		elseif verb == "quit" then
			write_ack({seq = seq, quit = true})
			minetest.request_shutdown("", false, 0)
		else
			write_ack({seq = seq, error = "unknown command " .. tostring(verb)})
		end
	end)
	if not ok then write_ack({seq = seq, error = tostring(err)}) end
end)
