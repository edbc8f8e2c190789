-- Indexes for the paged lists of GET /api/results (api.md §3) at the size of
-- the performance budget: 1 000 000 results, p99 ≤ 20 ms (architecture.md §6).
--
-- A page is "WHERE <filters> ORDER BY finished_at DESC, request_id DESC,
-- pc_id DESC LIMIT n OFFSET m", and X-Total-Count is counted with the same
-- WHERE and ORDER BY up to a cap. The init indexes stopped at finished_at,
-- so SQLite sorted every matching row to break ties (measured: 480 ms for
-- the first page of 1 M rows). Each index below yields the full order for
-- its filter, so a page reads only offset + limit index entries; each ends
-- in the columns of the other filters (job_id, exit_code) so that combined
-- filters and the capped count are decided inside the index, without
-- visiting the table. The old (finished_at), (pc_id, finished_at) and
-- (job_id, finished_at) indexes are prefixes of the new ones and are
-- replaced under the same names, so queries that relied on them keep their
-- plans and the writer does not maintain both.
--
-- SQLite has no planner statistics here (nothing runs ANALYZE); with equal
-- estimates it prefers a covering index, which is why the filter columns
-- are repeated in each index rather than left to table lookups.

DROP INDEX IF EXISTS execution_results_finished;
--bun:split
CREATE INDEX execution_results_finished ON execution_results (finished_at, request_id, pc_id, exit_code);
--bun:split
DROP INDEX IF EXISTS execution_results_pc;
--bun:split
CREATE INDEX execution_results_pc ON execution_results (pc_id, finished_at, request_id, job_id, exit_code);
--bun:split
DROP INDEX IF EXISTS execution_results_job;
--bun:split
CREATE INDEX execution_results_job ON execution_results (job_id, finished_at, request_id, pc_id, exit_code);
--bun:split
-- The exec filter: an exec has up to one row per PC of the fleet, which
-- would otherwise be sorted on every page. (exec_id, pc_id) stays for the
-- per-PC lookups of the executions detail.
CREATE INDEX execution_results_exec_finished ON execution_results (exec_id, finished_at, request_id, pc_id, job_id, exit_code);
--bun:split
-- status=failure: failures are usually a small share of the rows, so
-- walking the main indexes to find them (and to count them) could read most
-- of the table. These partial indexes hold only failures; the filter must
-- be written exactly "exit_code <> 0" for the planner to use them.
CREATE INDEX execution_results_failed ON execution_results (finished_at, request_id, pc_id, exit_code) WHERE exit_code <> 0;
--bun:split
CREATE INDEX execution_results_job_failed ON execution_results (job_id, finished_at, request_id, pc_id, exit_code) WHERE exit_code <> 0;
