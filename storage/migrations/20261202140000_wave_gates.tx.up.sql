-- Success-gated rollout waves (issue 20). A gated wave is judged on the
-- earlier waves' answers before it is published, and held when its gate is
-- not met, until an operator resumes or aborts it.
--   gated        the wave waits for its rollout's gate (every wave after the
--                first of a plan with rollout.gate)
--   judge_at     set while a due gated wave waits for answers: when the wait
--                is over and the gate is judged with what came in
--   reason       why the wave is held (the operator-facing text)
--   resumed_by   who published it anyway (initiated-by form), past the gate
--   expected_pcs the PCs the wave expected when it went out
ALTER TABLE exec_waves ADD COLUMN gated BOOLEAN NOT NULL DEFAULT FALSE;
--bun:split
ALTER TABLE exec_waves ADD COLUMN judge_at TEXT;
--bun:split
ALTER TABLE exec_waves ADD COLUMN reason TEXT;
--bun:split
ALTER TABLE exec_waves ADD COLUMN resumed_by TEXT;
--bun:split
ALTER TABLE exec_waves ADD COLUMN expected_pcs INTEGER;
