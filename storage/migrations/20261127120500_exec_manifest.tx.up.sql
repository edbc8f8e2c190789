-- The manifest an exec fired, as it was at fire time. Delayed rollout waves
-- publish this snapshot rather than re-reading the catalog, so every wave of
-- one exec runs the same script under the same version pin (an edit made
-- between two waves belongs to the next exec), and the executions API can
-- show what ran.
ALTER TABLE executions ADD COLUMN manifest TEXT;
