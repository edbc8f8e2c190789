// Package compat pins the response shapes that clients written for
// upstream kanade-backend 0.21.2 depend on, where this backend once
// differed (issue 16): GET /api/agents returns every agent unless a page
// is asked for; GET /api/results/{request_id} is one object; an unknown
// inventory job answers 200 with the empty shape; an absent inventory
// summary is null. The package holds only its golden tests (testdata/),
// which run against a whole backend over real HTTP.
package compat
