#!/usr/bin/perl
# Writes a small MaxMind DB for the tests (libmaxmind-db-writer-perl).
#   perl tests/support/write_mmdb.pl OUT.mmdb < networks.json
# networks.json: [ {"network": "127.0.0.0/8", "data": {"autonomous_system_number": 64500,
#                   "autonomous_system_organization": "Example"}}, ... ]
# GeoLite2-ASN fields and IPinfo-style ones (as, as_name, as_cc, prefix, prefix_entity,
# prefix_name) may be mixed. The tree is IPv6 with IPv4 under ::/96, as MaxMind ships it;
# reserved networks (127/8, ::1) are kept, since the tests send from loopback.
use strict;
use warnings;
use JSON::PP;
use MaxMind::DB::Writer::Tree;

my $out = shift @ARGV or die "usage: $0 OUT.mmdb < networks.json\n";
my $json = do { local $/; <STDIN> };
my $networks = JSON::PP->new->decode($json);

my %types = (
    autonomous_system_number       => 'uint32',
    autonomous_system_organization => 'utf8_string',
    as                             => 'uint32',
    asn                            => 'utf8_string',
    as_name                        => 'utf8_string',
    as_cc                          => 'utf8_string',
    prefix                         => 'utf8_string',
    prefix_entity                  => 'utf8_string',
    prefix_name                    => 'utf8_string',
);

my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version               => 6,
    record_size              => 24,
    database_type            => 'GeoLite2-ASN',
    languages                => ['en'],
    description              => { en => 'quilkin-c test ASN database' },
    map_key_type_callback    => sub { $types{ $_[0] } // die "unknown key $_[0]\n" },
    remove_reserved_networks => 0,
);
for my $n (@$networks) {
    $tree->insert_network($n->{network}, $n->{data});
}
open my $fh, '>:raw', "$out.tmp" or die "cannot write $out.tmp: $!\n";
$tree->write_tree($fh);
close $fh or die "cannot write $out.tmp: $!\n";
rename "$out.tmp", $out or die "cannot rename to $out: $!\n";   # readers never see half a file
