#!/usr/bin/perl
# A SOCKS4 and SOCKS4a server for the integration tests: Debian has no
# daemon that speaks SOCKS4a, so this relays with Perl's IO::Socket::Socks.
# Usage: socks4a-server.pl PORT   (listens on 127.0.0.1)
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::Socks qw(:constants $SOCKS_ERROR);

my $port = shift or die "usage: $0 PORT\n";
$SIG{CHLD} = 'IGNORE';
my $server = IO::Socket::Socks->new(
    ProxyAddr    => '127.0.0.1',
    ProxyPort    => $port,
    SocksVersion => 4,
    SocksResolve => 1,
    Listen       => 16,
    ReuseAddr    => 1,
) or die "listen: $SOCKS_ERROR\n";

while (1) {
    my $client = $server->accept() or next;
    my $pid = fork();
    next if !defined $pid || $pid > 0;
    my $cmd = $client->command() or exit 0;
    my (undef, $host, $dport) = @$cmd;
    my $remote = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $dport, Timeout => 10);
    if (!$remote) {
        $client->command_reply(REQUEST_FAILED, '0.0.0.0', 0);
        exit 0;
    }
    $client->command_reply(REQUEST_GRANTED, '0.0.0.0', 0);
    my $sel = IO::Select->new($client, $remote);
    while (my @ready = $sel->can_read(60)) {
        for my $fh (@ready) {
            my $other = $fh == $client ? $remote : $client;
            my $n = sysread($fh, my $buf, 16384);
            exit 0 if !$n;
            syswrite($other, $buf) or exit 0;
        }
    }
    exit 0;
}
