//go:build tools

// Package tools pins the etcd 3.7 commands the test bed builds for its etcd images.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
