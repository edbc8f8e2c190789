package httpx

import (
	"errors"
	"net/http/httptest"
	"testing"
	"time"
)

func TestPageTotal(t *testing.T) {
	count := func(n int, capped bool) func() (int, bool, error) {
		return func() (int, bool, error) { return n, capped, nil }
	}
	noCount := func() (int, bool, error) { return 0, false, errors.New("count must not run") }
	cases := []struct {
		name  string
		page  Page
		got   int
		count func() (int, bool, error)
		want  Total
	}{
		{"empty list", Page{Limit: 50}, 0, noCount, Total{N: 0}},
		{"short first page", Page{Limit: 50}, 7, noCount, Total{N: 7}},
		{"short last page", Page{Limit: 50, Offset: 100}, 7, noCount, Total{N: 107}},
		{"full page counts", Page{Limit: 50}, 50, count(120, false), Total{N: 120}},
		{"past the end counts", Page{Limit: 50, Offset: 500}, 0, count(120, false), Total{N: 120}},
		{"capped", Page{Limit: 50}, 50, count(TotalCap, true), Total{N: TotalCap, Capped: true}},
		{"capped below what was paged", Page{Limit: 50, Offset: 20000}, 50, count(TotalCap, true), Total{N: 20050, Capped: true}},
	}
	for _, c := range cases {
		got, err := PageTotal(c.page, c.got, c.count)
		if err != nil || got != c.want {
			t.Errorf("%s: got %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

func TestQueryTime(t *testing.T) {
	want := time.Date(2026, 1, 2, 6, 4, 5, 0, time.UTC)
	for _, q := range []string{
		"since=2026-01-02T06:04:05Z",
		"since=2026-01-02T15:04:05%2B09:00",
		"since=2026-01-02T15:04:05+09:00", // '+' unescaped reads as a space
		"since=2026-01-02T01:04:05.000-05:00",
	} {
		got, ok, err := QueryTime(httptest.NewRequest("GET", "/api/x?"+q, nil), "since")
		if err != nil || !ok || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("%s: %v %v %v", q, got, ok, err)
		}
	}
	if _, ok, err := QueryTime(httptest.NewRequest("GET", "/api/x", nil), "since"); ok || err != nil {
		t.Errorf("absent: %v %v", ok, err)
	}
	_, _, err := QueryTime(httptest.NewRequest("GET", "/api/x?since=2026-13-01T00:00:00Z", nil), "since")
	if KindStatus(err) != 400 {
		t.Errorf("bad month: %v", err)
	}
}

func TestQueryText(t *testing.T) {
	for q, ok := range map[string]bool{
		"actor=operator": true, "actor=": true, "actor=j%C3%BCrgen": true,
		"actor=%00": false, "actor=a%0Ab": false, "actor=%FF": false,
	} {
		_, err := QueryText(httptest.NewRequest("GET", "/api/x?"+q, nil), "actor")
		if (err == nil) != ok {
			t.Errorf("%s: %v", q, err)
		}
	}
}
