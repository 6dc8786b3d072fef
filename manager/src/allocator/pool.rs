//! Address arithmetic over sets of what is taken: the next free subnet of a pool, the next
//! free host of a subnet, the next free VNI. Lowest free first, so that released values are
//! reused and every replica of a decision is the same.

use rswarm_proto::model::Ipv4Cidr;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The first `/prefix` subnet inside `pool` that overlaps none of `taken`.
pub fn next_subnet(pool: Ipv4Cidr, prefix: u8, taken: &[Ipv4Cidr]) -> Option<Ipv4Cidr> {
    if prefix < pool.prefix() || prefix > 32 {
        return None;
    }
    let size = 1u64 << (32 - u32::from(prefix));
    let end = u64::from(u32::from(pool.broadcast())) + 1;
    let mut at = u64::from(u32::from(pool.network()));
    while at + size <= end {
        let candidate = Ipv4Cidr::new(Ipv4Addr::from(u32::try_from(at).ok()?), prefix).ok()?;
        match taken.iter().find(|t| t.overlaps(&candidate)) {
            None => return Some(candidate),
            Some(t) => {
                // Skip past whatever is in the way, keeping the candidates aligned.
                let past = u64::from(u32::from(t.broadcast())) + 1;
                at = past.max(at + size).div_ceil(size) * size;
            }
        }
    }
    None
}

/// The lowest host address of `subnet` not in `used`.
pub fn next_host(subnet: Ipv4Cidr, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.network()).checked_add(1)?;
    let last = u32::from(subnet.broadcast()).checked_sub(1)?;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip))
}

/// The lowest VNI from `first` to `last` not in `used`.
pub fn next_vni(first: u32, last: u32, used: &BTreeSet<u32>) -> Option<u32> {
    (first..=last).find(|v| !used.contains(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().expect("a CIDR")
    }

    #[test]
    fn subnets_skip_what_is_taken() {
        let pool = c("10.0.0.0/8");
        assert_eq!(next_subnet(pool, 24, &[]), Some(c("10.0.0.0/24")));
        assert_eq!(
            next_subnet(pool, 24, &[c("10.0.0.0/24"), c("10.0.2.0/24")]),
            Some(c("10.0.1.0/24"))
        );
        // A small subnet takes its whole /24; a large one everything it covers.
        assert_eq!(
            next_subnet(pool, 24, &[c("10.0.0.128/25")]),
            Some(c("10.0.1.0/24"))
        );
        assert_eq!(
            next_subnet(pool, 24, &[c("10.0.0.0/16")]),
            Some(c("10.1.0.0/24"))
        );
        // Subnets outside the pool are not in the way.
        assert_eq!(
            next_subnet(pool, 24, &[c("192.168.0.0/16")]),
            Some(c("10.0.0.0/24"))
        );
        assert_eq!(next_subnet(pool, 24, &[c("10.0.0.0/8")]), None);
        assert_eq!(
            next_subnet(c("255.255.255.0/24"), 24, &[]),
            Some(c("255.255.255.0/24"))
        );
        assert_eq!(
            next_subnet(c("255.255.255.0/24"), 24, &[c("255.255.255.0/24")]),
            None
        );
    }

    #[test]
    fn hosts_are_lowest_free_and_never_the_ends() {
        let s = c("10.0.1.0/30");
        let mut used = BTreeSet::new();
        assert_eq!(next_host(s, &used), Some(Ipv4Addr::new(10, 0, 1, 1)));
        used.insert(Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(next_host(s, &used), Some(Ipv4Addr::new(10, 0, 1, 2)));
        used.insert(Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(next_host(s, &used), None);
        assert_eq!(next_host(c("10.0.1.1/32"), &BTreeSet::new()), None);
    }

    #[test]
    fn vnis_are_lowest_free() {
        let used: BTreeSet<u32> = [4096, 4097, 4099].into();
        assert_eq!(next_vni(4096, 5000, &used), Some(4098));
        assert_eq!(next_vni(4096, 4097, &used), None);
    }
}
