//go:build !linux

package mailer

import "net"

// quickAcker returns nil: TCP_QUICKACK is Linux's.
func quickAcker(net.Conn) func() { return nil }

// socketPeeker returns nil: the probe then looks with a short deadline.
func socketPeeker(net.Conn) func() (bool, error) { return nil }
