package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

func TestWriteErrorStatusAndText(t *testing.T) {
	cases := []struct {
		err    error
		status int
		text   string
	}{
		{messages.Invalidf("bad %s", "x"), 400, "bad x"},
		{fmt.Errorf("wrapped: %w", Errorf(404, "nope")), 404, "nope"},
		{messages.NotFoundf("job 'j' not found in catalog"), 404, "job 'j' not found in catalog"},
		{messages.Invalidf("invalid timeout: x"), 400, "invalid timeout: x"},
		{messages.Conflictf("in use"), 409, "in use"},
		{messages.Unavailablef("publish failed"), 502, "publish failed"},
		{messages.Timeoutf("no answer"), 408, "no answer"},
		{messages.ValidateToken("pc_id", "a b"), 400, "invalid pc_id"},
		{errors.New("database is locked"), 500, "internal error; see the server log"},
	}
	for _, c := range cases {
		w := httptest.NewRecorder()
		WriteError(w, httptest.NewRequest("GET", "/api/x", nil), c.err)
		var body ErrorBody
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("%v: body %q", c.err, w.Body.String())
		}
		if w.Code != c.status || !strings.HasPrefix(body.Error, c.text) {
			t.Errorf("%v: got %d %q, want %d %q", c.err, w.Code, body.Error, c.status, c.text)
		}
	}
}

func TestParsePage(t *testing.T) {
	for q, want := range map[string]Page{"": {50, 0}, "limit=1000&offset=5": {1000, 5}} {
		p, err := ParsePage(httptest.NewRequest("GET", "/api/x?"+q, nil))
		if err != nil || p != want {
			t.Errorf("%q: %+v %v", q, p, err)
		}
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "offset=-1"} {
		if _, err := ParsePage(httptest.NewRequest("GET", "/api/x?"+q, nil)); statusOf(err) != http.StatusBadRequest {
			t.Errorf("%q accepted or wrong status: %v", q, err)
		}
	}
}

func statusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return KindStatus(err)
}

// A write refused by the database itself (here a query_only connection,
// SQLITE_READONLY, as on a read-only file) is 503 with the cause, however
// it was wrapped; a SQL error of the statement stays a 500.
func TestStorageUnavailableIs503(t *testing.T) {
	s := storagetest.Open(t)
	_, roErr := s.R.ExecContext(context.Background(), `INSERT INTO agents (pc_id) VALUES ('x')`)
	_, sqlErr := s.R.ExecContext(context.Background(), `SELECT * FROM no_such_table`)
	for _, c := range []struct {
		err    error
		status int
		text   string
	}{
		{fmt.Errorf("add group: %w", roErr), 503, "storage unavailable: attempt to write a readonly database"},
		{storage.Unavailable(roErr), 503, "storage unavailable: attempt to write a readonly database"},
		{fmt.Errorf("list: %w", sqlErr), 500, "internal error; see the server log"},
	} {
		rec := httptest.NewRecorder()
		WriteError(rec, httptest.NewRequest("POST", "/api/x", nil), c.err)
		var body ErrorBody
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != c.status || body.Error != c.text {
			t.Errorf("%v: %d %q, want %d %q", c.err, rec.Code, body.Error, c.status, c.text)
		}
	}
}

// Every body decoder of the API answers 400 with a text that says what to
// fix: the field and the type it wants, or where the JSON breaks.
func TestDecodeJSONTexts(t *testing.T) {
	type body struct {
		Name   string   `json:"name"`
		Groups []string `json:"groups"`
	}
	cases := []struct {
		name, in string
		optional bool
		want     string // "" accepts the body
	}{
		{"object", `{"name":"a","groups":["g"]}`, false, ""},
		{"empty", ` `, false, "request body must be a JSON object"},
		{"empty optional", ``, true, ""},
		{"malformed", `{"name":`, false, "malformed JSON at offset 8: unexpected end of JSON input"},
		{"wrong type", `{"name":5}`, false, "invalid name: expected a string, got number"},
		{"wrong element", `{"groups":[1]}`, true, "invalid groups: expected a string, got number"},
		{"not an object", `[1]`, false, "expected an object, got array"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(c.in))
			var v body
			decode := DecodeJSON
			if c.optional {
				decode = DecodeOptionalJSON
			}
			err := decode(httptest.NewRecorder(), r, &v)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want == "":
				return
			case err == nil:
				t.Fatalf("accepted, want %q", c.want)
			case err.Error() != c.want || !errors.Is(err, messages.ErrInvalid):
				t.Fatalf("error %q (invalid kind %v), want %q", err, errors.Is(err, messages.ErrInvalid), c.want)
			}
		})
	}
}
