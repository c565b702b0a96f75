//go:build !linux

package mailer

import "net"

// quickAcker returns nil: TCP_QUICKACK is Linux's.
func quickAcker(net.Conn) func() { return nil }
