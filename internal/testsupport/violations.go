package testsupport

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Violations records the permission violations a NATS server reports to
// one client, for tests of what a credential may publish or subscribe to.
// Connect with its Option; the zero value is ready to use.
type Violations struct {
	mu   sync.Mutex
	list []string
}

// Option is the nats.ErrorHandler that records the client's permission
// violations (other asynchronous errors are ignored).
func (v *Violations) Option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
			v.mu.Lock()
			v.list = append(v.list, err.Error())
			v.mu.Unlock()
		}
	})
}

// All returns the violations recorded so far, oldest first.
func (v *Violations) All() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.list)
}

// Wait waits up to timeout for a violation whose text contains want (any
// violation when want is empty), then fails the test.
func (v *Violations) Wait(t testing.TB, timeout time.Duration, want string) {
	t.Helper()
	Eventually(t, timeout, func() error {
		got := v.All()
		if slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, want) }) {
			return nil
		}
		return fmt.Errorf("no permission violation %q; got %v", want, got)
	})
}
