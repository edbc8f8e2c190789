package messages

import "encoding/json"

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
