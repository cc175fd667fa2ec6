//! A DNS server for tests on a local UDP port: answers A queries from a table the test
//! changes while it runs (TTL 1 s), NXDOMAIN for names not in it. Built on hickory-proto's
//! message types.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{rdata::A, RData, Record, RecordType},
};

/// The table: name (lowercase, no trailing dot) → addresses.
pub type Zone = Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>;

/// Starts the server; its address and its table.
pub async fn dns_server() -> (SocketAddr, Zone) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let zone: Zone = Arc::default();
    let table = zone.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = Message::new();
            answer
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(query.op_code())
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true);
            answer.add_queries(query.queries().to_vec());
            let mut known = false;
            for q in query.queries() {
                let name = q
                    .name()
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                if let Some(ips) = table.lock().unwrap().get(&name) {
                    known = true;
                    if q.query_type() == RecordType::A {
                        for ip in ips {
                            answer.add_answer(Record::from_rdata(
                                q.name().clone(),
                                1,
                                RData::A(A(*ip)),
                            ));
                        }
                    }
                }
            }
            if !known {
                answer.set_response_code(ResponseCode::NXDomain);
            }
            if let Ok(bytes) = answer.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    (addr, zone)
}
