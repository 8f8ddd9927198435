//! Components that are cheap to upload and costly to compile: each wraps
//! one core module in a component, as an attacker would.

use super::Rng;
use wasm_encoder::{
    CodeSection, Component, ConstExpr, DataSection, ElementSection, Elements, Function,
    FunctionSection, Instruction, MemorySection, MemoryType, Module, ModuleSection, RefType,
    TableSection, TableType, TypeSection, ValType,
};

fn component(module: &Module) -> Vec<u8> {
    let mut c = Component::new();
    c.section(&ModuleSection(module));
    c.finish()
}

fn one_type(m: &mut Module) {
    let mut types = TypeSection::new();
    types.ty().function([], []);
    m.section(&types);
}

/// One function of `ops` random adds over `locals` i64 locals: a large
/// register-allocation problem.
pub fn huge_function(locals: u32, ops: u32) -> Vec<u8> {
    let mut m = Module::new();
    one_type(&mut m);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    m.section(&funcs);
    let mut rng = Rng::new(7);
    let mut f = Function::new([(locals, ValType::I64)]);
    for _ in 0..ops {
        f.instruction(&Instruction::LocalGet(rng.below(locals as u64) as u32));
        f.instruction(&Instruction::LocalGet(rng.below(locals as u64) as u32));
        f.instruction(&Instruction::I64Add);
        f.instruction(&Instruction::LocalSet(rng.below(locals as u64) as u32));
    }
    f.instruction(&Instruction::End);
    let mut code = CodeSection::new();
    code.function(&f);
    m.section(&code);
    component(&m)
}

/// `count` small functions.
pub fn many_functions(count: u32) -> Vec<u8> {
    let mut m = Module::new();
    one_type(&mut m);
    let mut funcs = FunctionSection::new();
    for _ in 0..count {
        funcs.function(0);
    }
    m.section(&funcs);
    let mut code = CodeSection::new();
    for i in 0..count {
        let mut f = Function::new([(4, ValType::I32)]);
        for k in 0..8 {
            f.instruction(&Instruction::I32Const((i * 8 + k) as i32));
            f.instruction(&Instruction::LocalSet(k % 4));
        }
        f.instruction(&Instruction::End);
        code.function(&f);
    }
    m.section(&code);
    component(&m)
}

/// One function with `depth` nested blocks.
pub fn nested_blocks(depth: u32) -> Vec<u8> {
    let mut m = Module::new();
    one_type(&mut m);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    m.section(&funcs);
    let mut f = Function::new([]);
    for _ in 0..depth {
        f.instruction(&Instruction::Block(wasm_encoder::BlockType::Empty));
    }
    for _ in 0..depth {
        f.instruction(&Instruction::End);
    }
    f.instruction(&Instruction::End);
    let mut code = CodeSection::new();
    code.function(&f);
    m.section(&code);
    component(&m)
}

/// A memory with a `bytes`-long data segment and a table with an
/// `elements`-long element segment.
pub fn giant_segments(bytes: usize, elements: u32) -> Vec<u8> {
    let mut m = Module::new();
    one_type(&mut m);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    m.section(&funcs);
    let mut tables = TableSection::new();
    tables.table(TableType {
        element_type: RefType::FUNCREF,
        table64: false,
        minimum: u64::from(elements),
        maximum: None,
        shared: false,
    });
    m.section(&tables);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: (bytes as u64).div_ceil(65536),
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    m.section(&memories);
    let mut elems = ElementSection::new();
    let funcs_ref: Vec<u32> = vec![0; elements as usize];
    elems.active(
        None,
        &ConstExpr::i32_const(0),
        Elements::Functions(funcs_ref.into()),
    );
    m.section(&elems);
    let mut f = Function::new([]);
    f.instruction(&Instruction::End);
    let mut code = CodeSection::new();
    code.function(&f);
    m.section(&code);
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(0), vec![0xA5u8; bytes]);
    m.section(&data);
    component(&m)
}
