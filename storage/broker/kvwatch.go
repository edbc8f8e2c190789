package broker

import "github.com/nats-io/nats.go/jetstream"

// FollowWatch hands kw's updates to read and, once read returns (its
// context ended, or the watch closed), stops the watch and drains its
// channel until the client library closes it. The library's delivery
// callback blocks on a full channel by design, so a watch stopped without
// draining can leave that callback stuck; the library closes the channel
// once the callback has returned, which the drain guarantees, so the drain
// ends. It is the one way the long-lived KV watches (the projector's
// mirrors, the scheduler) end theirs.
func FollowWatch(kw jetstream.KeyWatcher, read func(updates <-chan jetstream.KeyValueEntry)) {
	defer func() {
		_ = kw.Stop()
		for range kw.Updates() {
		}
	}()
	read(kw.Updates())
}
