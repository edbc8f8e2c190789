package agentauth

import (
	"time"

	"github.com/nats-io/jwt/v2"

	"kanade-backend/messages"
	"kanade-backend/storage/broker/callout"
)

// What each kind of client may do on the bus. Permissions are allow lists
// (everything else is denied); the subjects are the ones the upstream agent
// (async-nats) and nats.go use, measured in permissions_test.go with real
// clients. They are kept short on purpose: the server decodes them from
// the JWT and builds them into per-connection lists at every connection,
// which at a fleet's reconnect was most of its work for each agent.
//
// JetStream reads an agent needs, by operation:
//
//	bind a bucket / store    $JS.API.STREAM.INFO.<stream>
//	KV get                   $JS.API.DIRECT.GET.<stream>.$KV.<bucket>.<key>
//	                         (buckets allow direct get)
//	KV watch, object get     an ordered push consumer: created with
//	                         $JS.API.CONSUMER.CREATE.<stream> (async-nats) or
//	                         $JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>
//	                         (nats.go), deliveries on _INBOX.>, flow control
//	                         answered as a reply (allow_responses), deleted
//	                         with $JS.API.CONSUMER.DELETE.<stream>.<name>
//	object info and chunks   $JS.API.DIRECT.GET.OBJ_<store>.> (nats.go) or
//	                         $JS.API.STREAM.MSG.GET.OBJ_<store> (async-nats)
//
// None of these writes: puts go to $KV.<bucket>.<key> and $O.<store>.>,
// management to $JS.API.STREAM.{CREATE,UPDATE,DELETE,PURGE}, consumers of
// other streams to $JS.API.CONSUMER.CREATE.<other>, all outside the lists.
//
// Two residuals a subject list cannot close, both read-only:
//   - A watch created through the legacy subject ($JS.API.CONSUMER.CREATE.
//     KV_agent_groups, what async-nats uses) carries its filter in the
//     body, so a PC could watch the whole agent_groups bucket and learn
//     other PCs' groups; direct gets and nats.go's watches are limited to
//     its own key.
//   - A consumer's deliver subject is not checked against the creator's
//     permissions, so a PC could have the server push KV values (written
//     by operators only) to a subject of its choice. It cannot create a
//     consumer on a stream it can write (RESULTS, or any other), which is
//     what would let it forge Commands that way.

// agentBuckets are the KV buckets an agent reads whole.
var agentBuckets = []string{messages.BucketAgentConfig, messages.BucketScriptCurrent, messages.BucketScriptStatus}

// kvStream is the stream behind a KV bucket; objStream behind an object store.
func kvStream(bucket string) string       { return "KV_" + bucket }
func objStream(store string) string       { return "OBJ_" + store }
func kvSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// readStream is everything needed to read a whole stream with gets and
// ordered consumers.
func readStream(stream string) []string {
	return []string{
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
		"$JS.API.CONSUMER.CREATE." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.DELETE." + stream + ".>",
	}
}

// readKey is what a client needs to get and watch one key of a bucket
// whose other keys it should not read (see the residual above).
func readKey(bucket, key string) []string {
	stream, subject := kvStream(bucket), kvSubject(bucket, key)
	return []string{
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.DIRECT.GET." + stream + "." + subject,
		"$JS.API.CONSUMER.CREATE." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".*." + subject,
		"$JS.API.CONSUMER.DELETE." + stream + ".>",
	}
}

// agentReads are the JetStream reads of every agent, groups aside.
func agentReads() []string {
	var out []string
	for _, b := range agentBuckets {
		out = append(out, readStream(kvStream(b))...)
	}
	releases := objStream(messages.ObjectStoreAgentReleases)
	return append(append(out, readStream(releases)...), "$JS.API.STREAM.MSG.GET."+releases)
}

// streamManagement changes or removes streams and what they hold.
var streamManagement = []string{
	"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>",
	"$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>", "$JS.API.STREAM.SNAPSHOT.>",
	"$JS.API.STREAM.RESTORE.>", "$JS.API.ACCOUNT.PURGE.>",
}

// responses lets an agent answer what it receives with a reply subject
// (logs.fetch.<own>, JetStream flow control) and nothing else: one reply
// per message, within two minutes.
var responses = &jwt.ResponsePermission{MaxMsgs: 1, Expires: 2 * time.Minute}

// AgentPermissions are the rights of the agent of pcID: its own Commands,
// broadcasts, kills, log requests and heartbeat, results, and read-only
// JetStream access to the buckets and store agents read.
func AgentPermissions(pcID string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(messages.HeartbeatSubject(pcID), "results.*")
	p.Pub.Allow.Add(agentReads()...)
	p.Pub.Allow.Add(readKey(messages.BucketAgentGroups, pcID)...)
	p.Sub.Allow.Add(
		messages.SubjectCommandsAll,
		messages.CommandsPCSubject(pcID),
		messages.CommandsGroupSubject("*"),
		messages.KillSubject("*"),
		messages.LogsFetchSubject(pcID),
		"_INBOX.>",
	)
	p.Sub.Deny.Add(callout.PrivateSubjects)
	p.Resp = responses
	return p
}

// EnrollingPermissions are the rights of an agent presenting an enrollment
// token not bound to a PC yet (enroll.go): read what agents read and hear
// broadcasts, publish nothing (not even a heartbeat: it could be for any
// PC), and subscribe to log requests of any PC without being able to
// answer one, because its subscription to logs.fetch.<pc_id> is how it
// says which PC it is. Its own Commands reach it once bound and
// reconnected.
func EnrollingPermissions() jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(agentReads()...)
	p.Pub.Allow.Add(readStream(kvStream(messages.BucketAgentGroups))...)
	p.Sub.Allow.Add(
		messages.SubjectCommandsAll,
		messages.CommandsGroupSubject("*"),
		messages.KillSubject("*"),
		messages.LogsFetchSubject("*"),
		"_INBOX.>",
	)
	p.Sub.Deny.Add(callout.PrivateSubjects)
	return p
}

// FullPermissions are every right on the bus (the shared token, anonymous
// clients where allowed, admins), except reading the callout's requests
// and answers: they are sealed anyway, but nobody but the backend needs
// them.
func FullPermissions() jwt.Permissions {
	var p jwt.Permissions
	p.Sub.Deny.Add(callout.PrivateSubjects)
	return p
}

// OperatorPermissions are an operator's rights through the CLI: what the
// operator role may do in the API (run, kill, jobs, schedules, groups,
// config) and no more. Agent releases, script revocation and changes to
// the streams themselves are for admins. The backends' own live events,
// replica registry and leader lease are written by the backends only: an
// operator must not put events on every dashboard, nor take or break the
// lease that says which backend runs the scheduler (a forged holder would
// stop every schedule until its key expires).
func OperatorPermissions() jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Deny.Add(streamManagement...)
	p.Pub.Deny.Add(
		"$O."+messages.ObjectStoreAgentReleases+".>",
		kvSubject(messages.BucketScriptStatus, ">"),
		callout.Subject,
		messages.SubjectLiveAll,
		kvSubject(messages.BucketReplicas, ">"),
		kvSubject(messages.BucketLeases, ">"),
	)
	p.Sub.Deny.Add(callout.PrivateSubjects)
	return p
}
