-- Orthanc: route every stable study to the ainode AI node.
--
-- Install: add this file to Orthanc's "LuaScripts" and declare the node under
-- "DicomModalities", e.g. "AINODE": ["AINODE", "ainode.hospital.local", 11112].
-- Results the node sends back (SEG, SR) come from the node's AE title and are never
-- routed back to it; an instance already forwarded is not forwarded again.
--
-- Orthanc forwards a study only once it is stable (its StableAge), so on the node give
-- Orthanc's AE title the completion rule "release" (completion_rules: {ORTHANC: release},
-- or AINODE_COMPLETION_RULES=ORTHANC=release): each series is then complete when Orthanc
-- releases the association, instead of waiting for the node's own quiet period on top.

local NODE_AET = 'AINODE'       -- the node's AE title (AINODE_AE_TITLE)
local NODE_MODALITY = 'AINODE'  -- the node's name in DicomModalities

forwarded = {}

function OnStableStudy(studyId, tags, metadata)
  local instances = ParseJson(RestApiGet('/studies/' .. studyId .. '/instances'))
  local ids = {}
  for _, instance in pairs(instances) do
    local origin = RestApiGet('/instances/' .. instance['ID'] .. '/metadata/RemoteAET')
    if origin ~= NODE_AET and not forwarded[instance['ID']] then
      table.insert(ids, '"' .. instance['ID'] .. '"')
      forwarded[instance['ID']] = true
    end
  end
  if #ids > 0 then
    RestApiPost('/modalities/' .. NODE_MODALITY .. '/store',
      '{"Resources":[' .. table.concat(ids, ',') .. '],"Asynchronous":true}')
  end
end
