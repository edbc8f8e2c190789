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
// newest success per PC of its job, seeded from the store and kept current
// by the results projector, and the PCs it fired that have not answered)
// and its last ticks; it fires through the exec engine by message and
// never waits inside Receive for another actor. The schedule actors run on
// a few workers the supervisor owns (workerPool) rather than a goroutine
// per mailbox activation, so that thousands of ticks due in the same
// second stay within the fire-lateness budget. Decide is the policy,
// free of time sources and I/O, so that every row of the spec's table is a
// plain unit test.
package schedule
