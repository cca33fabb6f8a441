//! Transactions: compares, validation and execution as one revision.

use drover_proto::etcd::etcdserverpb::{
    compare, request_op, response_op, Compare, ResponseOp, TxnRequest, TxnResponse,
};
use drover_proto::etcd::mvccpb::KeyValue;

use super::{Applied, Pending, Store, StoreError, MAX_TXN_OPS};

impl Store {
    /// Applies a Txn as one revision. All compares, nested ones included,
    /// are evaluated against the state before the txn, as etcd does, and
    /// every op is validated before any is applied.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<Applied<TxnResponse>, StoreError> {
        check_txn_shape(req)?;
        let mut path = Vec::new();
        self.eval_path(req, &mut path);
        self.validate_path(req, &path, &mut 0)?;
        let mut p = self.pending();
        let out = self.exec_txn(&mut p, req, &path, &mut 0)?;
        Ok(self.commit(p, out))
    }

    fn eval_path(&self, req: &TxnRequest, path: &mut Vec<bool>) {
        let ok = req.compare.iter().all(|c| self.compare(c));
        path.push(ok);
        let ops = if ok { &req.success } else { &req.failure };
        for op in ops {
            if let Some(request_op::Request::RequestTxn(t)) = &op.request {
                self.eval_path(t, path);
            }
        }
    }

    fn validate_path(
        &self,
        req: &TxnRequest,
        path: &[bool],
        idx: &mut usize,
    ) -> Result<(), StoreError> {
        let ok = path.get(*idx).copied().unwrap_or(false);
        *idx += 1;
        for op in if ok { &req.success } else { &req.failure } {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    self.check_read_revision(r.revision)?;
                }
                Some(request_op::Request::RequestPut(r)) => self.check_put(r)?,
                Some(request_op::Request::RequestTxn(t)) => self.validate_path(t, path, idx)?,
                Some(request_op::Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn exec_txn(
        &mut self,
        p: &mut Pending,
        req: &TxnRequest,
        path: &[bool],
        idx: &mut usize,
    ) -> Result<TxnResponse, StoreError> {
        let ok = path.get(*idx).copied().unwrap_or(false);
        *idx += 1;
        let mut responses = Vec::new();
        for op in if ok { &req.success } else { &req.failure } {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    response_op::Response::ResponseRange(self.range(r)?)
                }
                Some(request_op::Request::RequestPut(r)) => {
                    response_op::Response::ResponsePut(self.exec_put(p, r))
                }
                Some(request_op::Request::RequestDeleteRange(r)) => {
                    response_op::Response::ResponseDeleteRange(self.exec_delete(p, r))
                }
                Some(request_op::Request::RequestTxn(t)) => {
                    response_op::Response::ResponseTxn(self.exec_txn(p, t, path, idx)?)
                }
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: ok,
            responses,
        })
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = self
            .keys_in(&c.key, &c.range_end)
            .map(|(_, kv)| kv)
            .collect();
        if kvs.is_empty() {
            if c.target == compare::CompareTarget::Value as i32 {
                return false;
            }
            return compare_kv(c, &KeyValue::default());
        }
        kvs.into_iter().all(|kv| compare_kv(c, kv))
    }
}

fn check_txn_shape(req: &TxnRequest) -> Result<(), StoreError> {
    // As etcd: compares count as well as each branch's operations.
    if req.compare.len() > MAX_TXN_OPS
        || req.success.len() > MAX_TXN_OPS
        || req.failure.len() > MAX_TXN_OPS
    {
        return Err(StoreError::TooManyOps);
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => {
                return Err(StoreError::KeyNotProvided)
            }
            Some(request_op::Request::RequestPut(r)) if r.key.is_empty() => {
                return Err(StoreError::KeyNotProvided)
            }
            Some(request_op::Request::RequestDeleteRange(r)) if r.key.is_empty() => {
                return Err(StoreError::KeyNotProvided)
            }
            Some(request_op::Request::RequestTxn(t)) => check_txn_shape(t)?,
            _ => {}
        }
    }
    Ok(())
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let ord = match (T::try_from(c.target), &c.target_union) {
        (Ok(T::Value), Some(U::Value(v))) => kv.value.as_slice().cmp(v.as_slice()),
        (Ok(T::Value), None) => kv.value.as_slice().cmp(&[]),
        (Ok(T::Version), u) => kv.version.cmp(&int_target(u)),
        (Ok(T::Create), u) => kv.create_revision.cmp(&int_target(u)),
        (Ok(T::Mod), u) => kv.mod_revision.cmp(&int_target(u)),
        (Ok(T::Lease), u) => kv.lease.cmp(&int_target(u)),
        _ => return false,
    };
    match R::try_from(c.result) {
        Ok(R::Equal) => ord.is_eq(),
        Ok(R::NotEqual) => ord.is_ne(),
        Ok(R::Greater) => ord.is_gt(),
        Ok(R::Less) => ord.is_lt(),
        Err(_) => false,
    }
}

fn int_target(u: &Option<compare::TargetUnion>) -> i64 {
    use compare::TargetUnion as U;
    match u {
        Some(U::Version(v) | U::CreateRevision(v) | U::ModRevision(v) | U::Lease(v)) => *v,
        Some(U::Value(_)) | None => 0,
    }
}
