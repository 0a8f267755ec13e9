// Package all registers every backup backend with storage.Open: import it
// for its side effect.
//
//	import _ "github.com/mastodon-on-balena/mastodon-balena/storage/all"
package all

import (
	_ "github.com/mastodon-on-balena/mastodon-balena/storage/file"  // file://
	_ "github.com/mastodon-on-balena/mastodon-balena/storage/s3"    // s3://
	_ "github.com/mastodon-on-balena/mastodon-balena/storage/swift" // swift://
)
