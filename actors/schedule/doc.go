// Package schedule is the scheduler (behaviour.md §3): a supervisor that
// follows KV schedules and keeps one actor per schedule, and the pure dedup
// policy those actors apply on every tick.
//
// The supervisor owns the watch on the schedules bucket (snapshot, then
// live puts and deletes, stale revisions ignored), spawns, updates and
// stops the schedule actors, keeps invalid schedules visible with their
// error, restarts a failing actor alone (more than MaxRestarts failures in
// RestartWindow and it is stopped, the schedule faulted), and routes each
// projected result only to the actors of that result's job. Each schedule
// actor owns its cron alarm (in the schedule's zone; the actors due at the
// same instant share one clock timer, see alarms), its dedup state (the
// newest success per PC of its job, and the PCs it fired that have not
// answered) and its last ticks.
//
// A tick does no I/O (thousands of schedules share an instant): it reads
// the job and resolves the target in the fleet view (fleetView: the jobs
// mirror, agents and groups in memory, loaded once and kept current by the
// projectors' events), decides, and sends the exec engine a request that
// carries the job, the resolved PCs, a correlation id and, for a cron or
// catch-up tick, the exec id derived from the schedule and the instant
// (messages.ScheduledExecID), so that no retry or replay of an instant
// can make a second exec. The engine answers by message; a fire it does
// not answer in time is settled in the store (exec.Settle), never guessed,
// so the recorded outcome is what was published. The dedup state is
// loaded by the supervisor in bulk, one load for every schedule starting
// together; the auto-disable write runs on a goroutine that answers by
// message. The schedule actors run on a few workers the supervisor owns
// (actorsys.WorkerPool) rather than a goroutine per mailbox activation. DecideKnown
// is the policy, free of time sources and I/O, so that every row of the
// spec's table is a plain unit test.
package schedule
