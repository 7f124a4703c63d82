-- Argo CD health check for payi.io Organization, Group and Application.
-- The operator publishes kstatus-style conditions, so this script only reads them:
--   Healthy      the current generation is observed and Ready is True
--   Degraded     Stalled is True: a person must act (conflict, refused namespace, ...)
--   Progressing  anything else: no status yet, an older generation, or Reconciling
--                (waiting for a parent applied later in the sync, or for children to go)
local hs = { status = "Progressing", message = "waiting for payi-operator to report status" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.message = "waiting for payi-operator to observe generation " .. tostring(generation)
  return hs
end
local found = {}
for _, condition in ipairs(obj.status.conditions) do
  found[condition.type] = condition
end
local function describe(condition)
  return (condition.reason or "") .. ": " .. (condition.message or "")
end
if found.Stalled ~= nil and found.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(found.Stalled)
elseif found.Ready ~= nil and found.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(found.Ready)
elseif found.Ready ~= nil then
  hs.message = describe(found.Ready)
end
return hs
