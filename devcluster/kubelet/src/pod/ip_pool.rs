//! Loopback pod IPs: each pod gets its own 127.0.x.y (x in 1..=255, y in 1..=254), released when the
//! pod goes. The whole of 127.0.0.0/8 reaches the loopback interface on Linux, so a process can bind
//! its pod IP with no setup. The scan starts at a random offset so that two devclusters on one
//! machine (parallel tests) rarely hand out the same address.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::error::{Error, Result};

const FIRST_SUBNET: u32 = 1;
const SUBNETS: u32 = 255;
const HOSTS_PER_SUBNET: u32 = 254;
const CAPACITY: u32 = SUBNETS * HOSTS_PER_SUBNET;

pub struct IpPool {
    state: Mutex<PoolState>,
}

struct PoolState {
    in_use: HashSet<Ipv4Addr>,
    next_index: u32,
}

fn address(index: u32) -> Ipv4Addr {
    let subnet = FIRST_SUBNET + index / HOSTS_PER_SUBNET;
    let host = 1 + index % HOSTS_PER_SUBNET;
    Ipv4Addr::new(127, 0, subnet as u8, host as u8)
}

impl IpPool {
    pub fn new() -> Self {
        IpPool {
            state: Mutex::new(PoolState {
                in_use: HashSet::new(),
                next_index: rand::random_range(0..CAPACITY),
            }),
        }
    }

    pub fn allocate(&self) -> Result<Ipv4Addr> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for step in 0..CAPACITY {
            let index = (state.next_index + step) % CAPACITY;
            let ip = address(index);
            if state.in_use.insert(ip) {
                // Round-robin, so a released address is not reused at once.
                state.next_index = (index + 1) % CAPACITY;
                return Ok(ip);
            }
        }
        Err(Error::PodIpsExhausted)
    }

    pub fn release(&self, ip: Ipv4Addr) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.in_use.remove(&ip);
    }
}

impl Default for IpPool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_loopback_and_never_network_or_broadcast() {
        let pool = IpPool::new();
        let ips: Vec<_> = (0..600).map(|_| pool.allocate().unwrap()).collect();
        let distinct: HashSet<_> = ips.iter().collect();
        assert_eq!(distinct.len(), ips.len());
        for ip in &ips {
            let [a, b, c, d] = ip.octets();
            assert_eq!((a, b), (127, 0));
            assert!(c >= 1 && (1..=254).contains(&d), "{ip}");
        }
        pool.release(ips[0]);
        assert!(pool.allocate().is_ok());
    }
}
