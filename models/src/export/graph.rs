//! A small builder for ONNX graphs over the protobuf types candle-onnx generates from the
//! official `onnx.proto3` (`candle_onnx::onnx`).
//!
//! It keeps the exporters readable: `g.op("MatMul", &[&x, &w], vec![])` returns the name of the
//! node's output; weights become initializers with little-endian `raw_data`; every value gets a
//! fresh, readable name (`{prefix}/{op}_{n}`).

use candle_onnx::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType, tensor_proto,
    tensor_shape_proto, type_proto,
};

/// ONNX element types used by the exported graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// float32.
    F32,
    /// float16.
    F16,
    /// int64.
    I64,
    /// uint8 (packed 4-bit weights).
    U8,
    /// bool.
    Bool,
}

impl Elem {
    fn code(self) -> i32 {
        let t = match self {
            Elem::F32 => tensor_proto::DataType::Float,
            Elem::F16 => tensor_proto::DataType::Float16,
            Elem::I64 => tensor_proto::DataType::Int64,
            Elem::U8 => tensor_proto::DataType::Uint8,
            Elem::Bool => tensor_proto::DataType::Bool,
        };
        t as i32
    }

    /// The name the bundle manifest uses.
    pub fn manifest_name(self) -> &'static str {
        match self {
            Elem::F32 => "float32",
            Elem::F16 => "float16",
            Elem::I64 => "int64",
            Elem::U8 => "uint8",
            Elem::Bool => "bool",
        }
    }
}

/// A graph input/output dimension: fixed, or a named dynamic size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A dynamic size by symbol.
    Named(String),
}

/// `Dim::Named` from a `&str`.
pub fn named(symbol: &str) -> Dim {
    Dim::Named(symbol.to_string())
}

/// A graph under construction.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
    prefix: String,
}

/// An attribute of a node.
pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// An integer-list attribute.
pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A float attribute.
pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: value,
        ..Default::default()
    }
}

fn value_info(name: &str, elem: Elem, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n),
                Dim::Named(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem.code(),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Names of values created from now on start with `prefix` (e.g. `layers.3`).
    pub fn set_prefix(&mut self, prefix: impl Into<String>) {
        self.prefix = prefix.into();
    }

    /// A fresh value name (for nodes with several named outputs).
    pub fn fresh_name(&mut self, what: &str) -> String {
        self.fresh(what)
    }

    fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        if self.prefix.is_empty() {
            format!("{what}_{}", self.counter)
        } else {
            format!("{}/{what}_{}", self.prefix, self.counter)
        }
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem, dims));
        name.to_string()
    }

    /// Declares `value` a graph output under `name` (an Identity node renames it if needed).
    pub fn output(&mut self, value: &str, name: &str, elem: Elem, dims: &[Dim]) {
        self.declare_output(name, elem, dims);
        self.bind_output(value, name);
    }

    /// Declares a graph output (outputs keep the order of declaration); [`Graph::bind_output`]
    /// gives it its value later.
    pub fn declare_output(&mut self, name: &str, elem: Elem, dims: &[Dim]) {
        self.outputs.push(value_info(name, elem, dims));
    }

    /// Makes `value` the declared output `name`.
    pub fn bind_output(&mut self, value: &str, name: &str) {
        if value != name {
            self.node("Identity", &[value], &[name], vec![], "");
        }
    }

    fn initializer(&mut self, name: &str, elem: Elem, dims: &[usize], raw: Vec<u8>) -> String {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: elem.code(),
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    /// A float32 weight.
    pub fn weight_f32(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}");
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, Elem::F32, dims, raw)
    }

    /// A float16 weight (values rounded from f32).
    pub fn weight_f16(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let raw = data
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        self.initializer(name, Elem::F16, dims, raw)
    }

    /// A uint8 weight (packed 4-bit values, zero points).
    pub fn weight_u8(&mut self, name: &str, dims: &[usize], data: Vec<u8>) -> String {
        self.initializer(name, Elem::U8, dims, data)
    }

    /// An int64 constant.
    pub fn const_i64(&mut self, values: &[i64]) -> String {
        let name = self.fresh("const");
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(&name, Elem::I64, &[values.len()], raw)
    }

    /// A float32 scalar constant (rank 0).
    pub fn scalar_f32(&mut self, value: f32) -> String {
        let name = self.fresh("scalar");
        self.initializer(&name, Elem::F32, &[], value.to_le_bytes().to_vec())
    }

    /// An int64 scalar constant (rank 0).
    pub fn scalar_i64(&mut self, value: i64) -> String {
        let name = self.fresh("scalar");
        self.initializer(&name, Elem::I64, &[], value.to_le_bytes().to_vec())
    }

    /// Adds a node with explicit output names.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
        domain: &str,
    ) {
        let name = self.fresh(op);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name,
            op_type: op.into(),
            domain: domain.into(),
            attribute: attributes,
            ..Default::default()
        });
    }

    /// A standard-domain node with one output; returns the output's name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node(op, inputs, &[&out], attributes, "");
        out
    }

    /// A node with `n` outputs (Split); returns their names.
    pub fn op_multi(
        &mut self,
        op: &str,
        inputs: &[&str],
        n: usize,
        attributes: Vec<AttributeProto>,
    ) -> Vec<String> {
        let outs: Vec<String> = (0..n).map(|_| self.fresh(&op.to_lowercase())).collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.node(op, inputs, &refs, attributes, "");
        outs
    }

    /// A com.microsoft node with one output.
    pub fn ms_op(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node(op, inputs, &[&out], attributes, MS_DOMAIN);
        out
    }

    /// The finished model: opset 17 of the standard domain, version 1 of com.microsoft.
    pub fn into_model(self, name: &str, doc: &str) -> ModelProto {
        let opset = |domain: &str, version| OperatorSetIdProto {
            domain: domain.into(),
            version,
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![opset("", 17), opset(MS_DOMAIN, 1)],
            producer_name: "meit-models".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: name.into(),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// ONNX Runtime's contrib operator domain.
pub const MS_DOMAIN: &str = "com.microsoft";

/// The protobuf bytes of `model`.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(model)
}
