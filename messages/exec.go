package messages

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// ExecResponse answers POST /api/exec/{job_id} (behaviour.md §2).
type ExecResponse struct {
	ExecID  string `json:"exec_id"`
	JobID   string `json:"job_id"`
	Version string `json:"version"`
	// TargetCount is the number of subjects published (upstream meaning;
	// the CLI prints it).
	TargetCount int      `json:"target_count"`
	Subjects    []string `json:"subjects"`
	// ExpectedPcs is the number of PCs resolved at fire time.
	ExpectedPcs int `json:"expected_pcs"`
}

// MarshalJSON emits [] rather than null for no subjects.
func (r ExecResponse) MarshalJSON() ([]byte, error) {
	type alias ExecResponse
	a := alias(r)
	a.Subjects = nonNil(a.Subjects)
	return json.Marshal(a)
}

// execIDSpace is the UUIDv5 namespace of scheduled exec ids. It is fixed
// forever: every backend, replica and restart must derive the same id for
// the same (schedule, instant).
var execIDSpace = uuid.MustParse("0c5b3a52-8a43-5e0e-9d1f-6b616e616465")

// ScheduledExecID is the exec id of schedule scheduleID's fire of instant
// (scaleout.md §3.4): UUIDv5 of "sched:<id>@<unix seconds>". A retried,
// replayed or caught-up tick of the same instant derives the same id, and
// the executions primary key refuses a second exec for it. It is still a
// UUID, so the wire (Command.job_id) is unchanged.
func ScheduledExecID(scheduleID string, instant time.Time) string {
	return uuid.NewSHA1(execIDSpace, []byte("sched:"+scheduleID+"@"+strconv.FormatInt(instant.UTC().Unix(), 10))).String()
}
